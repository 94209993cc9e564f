"""Datasets: reading published layouts and users' folders, splits, synthetic data."""
