"""A forward pass replayed as one CUDA graph per input shape.

An eager forward pass of PSIC-Net launches its kernels one by one from Python. In a run,
the inference thread shares the interpreter with decoding, post-processing and row
threads; every launch can wait for the GIL, and the GPU idles between kernels (on an
H200 a batch of 8 took 113 ms of GPU time in a run against 24 ms alone). A graph is one
launch per batch. A shape is captured the second time it is seen: the first call runs
eagerly and lets cuDNN choose its kernels; a batch size met once (a run's last, partial
batch) never pays for a capture.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

Forward = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class Graphed:
    """The graph of one input shape, with the buffers it reads and writes."""

    def __init__(self, forward: Forward, example: torch.Tensor, pool: Any = None) -> None:
        self.input = example.clone()  # outside the pool: no other graph's work reuses it
        side = torch.cuda.Stream(example.device)  # capture needs a warmed, non-default stream
        side.wait_stream(torch.cuda.current_stream(example.device))
        with torch.cuda.stream(side):
            forward(self.input)
        torch.cuda.current_stream(example.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # Other threads (decoding, post-processing) keep using CUDA during a capture.
        with torch.cuda.graph(self.graph, pool=pool, capture_error_mode="thread_local"):
            self.outputs = forward(self.input)

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.input.copy_(images)
        self.graph.replay()
        # The next replay overwrites the outputs; the caller's batch is still on its way.
        probabilities, segmentation = self.outputs
        return probabilities.clone(), segmentation.clone()


def on_cuda(images: torch.Tensor) -> bool:
    return images.is_cuda


class GraphedForward:
    """``forward`` as graphs on CUDA, one per shape seen twice; eager otherwise.
    ``capture`` and ``capturable`` are the graph and where one is made (tests replace
    them to check the rule on a CPU)."""

    def __init__(
        self,
        forward: Forward,
        capture: Callable[[Forward, torch.Tensor], Forward] | None = None,
        capturable: Callable[[torch.Tensor], bool] = on_cuda,
    ) -> None:
        self.forward, self.capturable = forward, capturable
        self.capture = capture or self._graph
        self.graphs: dict[torch.Size, Forward] = {}
        self.seen: set[torch.Size] = set()
        self.pool: Any = None  # torch's pool handle (its type is private)

    def _graph(self, forward: Forward, example: torch.Tensor) -> Forward:
        """Every shape's graph in one memory pool, so it holds about the largest graph's
        activations, not their sum (a watch run meets many batch sizes). That is safe
        here: replays run one at a time on the caller's stream, a graph's activations are
        dead once its replay ends, and its outputs are cloned before the next replay."""
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        return Graphed(forward, example, self.pool)

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = images.shape
        graphed = self.graphs.get(shape)
        if graphed is None and shape in self.seen and self.capturable(images):
            graphed = self.graphs[shape] = self.capture(self.forward, images)
        if graphed is None:
            self.seen.add(shape)
            return self.forward(images)
        return graphed(images)
