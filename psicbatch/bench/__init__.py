"""Benchmarking: latency statistics, stable measurement windows, the machine's ceiling."""
