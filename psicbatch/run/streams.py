"""CUDA stream hand-offs between a worker's stages, written once for GPUs and CPUs.

Each stage that launches GPU work has a stream of its own (uploading, inference,
post-processing). A stage marks the end of its work on a batch with an event; the next
stage's stream waits on that event (on the GPU, not the host) and records its use of the
batch's tensors, so the caching allocator does not hand their memory out while queued
work still reads it. On the CPU there are no streams: every function here is then a
no-op, and the stages run the same code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

Stream = torch.cuda.Stream | None
Event = torch.cuda.Event | None


def new_stream(device: torch.device) -> Stream:
    """A stream of its own on a GPU; None on the CPU."""
    return torch.cuda.Stream(device) if device.type == "cuda" else None


@contextlib.contextmanager
def on(stream: Stream) -> Iterator[None]:
    """Launch the block's GPU work on ``stream`` (on the CPU: run it as it is)."""
    if stream is None:
        yield
        return
    with torch.cuda.stream(stream):
        yield


def mark(stream: Stream) -> Event:
    """An event after the work queued on ``stream`` so far (timing enabled: it also
    times the GPU's own work between two marks)."""
    if stream is None:
        return None
    event = torch.cuda.Event(enable_timing=True)
    event.record(stream)
    return event


def hand_over(event: Event, stream: Stream, *tensors: torch.Tensor | None) -> None:
    """Order ``stream`` after ``event`` and record that it uses ``tensors``."""
    if event is None or stream is None:
        return
    stream.wait_event(event)
    used_on(stream, *tensors)


def used_on(stream: Stream, *tensors: torch.Tensor | None) -> None:
    """Keep ``tensors``' memory from reuse until the work queued on ``stream`` so far is
    done (they may have been allocated on another stream)."""
    if stream is None:
        return
    for tensor in tensors:
        if tensor is not None and tensor.is_cuda:
            tensor.record_stream(stream)
