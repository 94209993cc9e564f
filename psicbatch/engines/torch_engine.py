"""The torch backend: the checkpoint itself, prepared for inference when it opens.

On CPUs with AVX-512 BF16 this is the fastest option measured (bf16 + channels_last,
2.5x ONNX Runtime fp32, benchmarks/results/cpu-backends/); it also runs on CUDA, where
it is the GPU engine that can be verified without TensorRT. The engine runs on the
device it is opened on, not the one it was built on. When it opens, BatchNorm is folded
into the convolutions (one pass less over every activation map) and the weights are cast
to the engine's precision (fp16/bf16 weights: no per-layer casts, as autocast over fp32
weights makes); only the sigmoid outputs are float32. On a GPU, or with ``--compile``,
one batch at the engine's largest batch and input size runs at open, so cuDNN's kernel
choice and compilation happen there rather than in a run's first batch. On a GPU the
uncompiled engine replays each steady batch shape as one CUDA graph (cuda_graphs.py),
captured at open for the largest batch; partial batches are padded to a power of two
(engines/base.py), so few shapes are ever searched and captured.

On CPUs, conv10's 15x15 kernel runs in the frequency domain where that is faster
(frequency_conv.py: the whole network 1.7-2.4x faster in fp32, 2.3x in bf16 without AMX).

On CUDA, fp32 is IEEE fp32 (TF32 off); fp16 and bf16 engines leave TF32 to torch's defaults.

Memory layout: channels_last on every device and in every precision. In fp32 on CPUs the
default layout used to be kept, since channels_last ran the paper's network 1.4-1.5x
slower on an AVX2 CPU; that was conv10 computed directly, which fp32 on CPUs no longer
does (benchmarks/cpu_engine_forms.py). On CPUs each convolution's ReLU runs inside it
(fused_relu.py).
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from psicbatch.checkpoint import Checkpoint, load_checkpoint
from psicbatch.engines.base import Engine
from psicbatch.engines.cuda_graphs import Forward, GraphedForward
from psicbatch.engines.export import ProbabilityModel
from psicbatch.engines.folding import fold_batchnorm
from psicbatch.engines.frequency_conv import (
    large_kernels_in_frequency_domain,
    with_large_kernel_method,
)
from psicbatch.engines.fused_relu import fusion_works, relu_into_convolutions
from psicbatch.engines.manifest import FREQUENCY_DOMAIN, Manifest

ENGINE_FILE = "model.pt"
CUDNN_SEARCH_ENV = "PSICBATCH_CUDNN_SEARCH"
WEIGHT_TYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def build_torch(checkpoint_path: Path, directory: Path, compile_model: bool) -> dict[str, Any]:
    """The engine file is a byte copy of the checkpoint (loaded with weights_only)."""
    shutil.copyfile(checkpoint_path, directory / ENGINE_FILE)
    return {"engine_file": ENGINE_FILE, "details": {"compile": compile_model}}


class TorchEngine(Engine):
    memory_format = torch.channels_last  # of the weights and every batch (see above)

    def __init__(
        self, directory: Path, manifest: Manifest, device: torch.device, engine_file: Path
    ) -> None:
        manifest = with_large_kernel_method(manifest, device)  # how it runs here
        super().__init__(directory, manifest, device)
        checkpoint: Checkpoint = load_checkpoint(engine_file)
        dtype = WEIGHT_TYPES[manifest.precision]
        model = ProbabilityModel(fold_batchnorm(checkpoint.build_model()), dtype).to(device)
        # Module.to takes memory_format at run time; torch's type stubs omit it.
        self.model = model.to(memory_format=self.memory_format)  # type: ignore[call-overload]
        if manifest.backend_details["large_kernels"] == FREQUENCY_DOMAIN:
            large_kernels_in_frequency_domain(self.model)
        compiled = bool(manifest.backend_details.get("compile"))
        if device.type == "cpu" and not compiled and fusion_works(dtype):
            relu_into_convolutions(self.model)  # torch.compile fuses them itself
        if device.type == "cuda":
            # Batch and size are fixed within a run: let cuDNN pick the fastest kernels once
            # (likely most of the 86 s an engine took to open at batch 32 on an H200;
            # CUDNN_SEARCH_ENV=0 takes its heuristic choice instead, for a faster start).
            torch.backends.cudnn.benchmark = os.environ.get(CUDNN_SEARCH_ENV, "1") != "0"
            # fp32 means fp32: cuDNN's default TF32 convolutions keep 10 mantissa bits,
            # which moved probabilities by more than 1e-3 from the CPU's on an H200.
            fp32 = manifest.precision == "fp32"
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = not fp32
        if compiled:
            # Inductor leaves the frequency form's complex products to eager kernels, as
            # measured; its warning about that would reach every compiled run's terminal.
            warnings.filterwarnings("ignore", "Torchinductor does not support code generation")
            separate_kernel_cache()
            self.model = torch.compile(self.model)
        self.forward: Forward = self.model if compiled else GraphedForward(self.model)
        if compiled or device.type == "cuda":
            warm_up = torch.zeros(self.warm_up_shape, device=device)
            for _ in range(1 if compiled else 2):  # the second call captures the graph
                self._run(warm_up)

    @property
    def pads_batches(self) -> bool:
        return self.device.type == "cuda"  # cuDNN searches, graphs capture, per batch size

    @property
    def warm_up_shape(self) -> tuple[int, int, int, int]:
        m = self.manifest
        return (m.max_batch, m.channels, *m.input_size)

    def _run(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = images.contiguous(memory_format=self.memory_format)
        with torch.inference_mode():
            probabilities, segmentation = self.forward(batch)
        return probabilities, segmentation


def separate_kernel_cache() -> None:
    """Inductor keys its kernel cache without the instructions ``ATEN_CPU_CAPABILITY``
    holds torch to, so under such a hold it reuses kernels it built for the machine's own
    and computes garbage (pooling layers 1,068 off on an AVX-512 Xeon held to AVX2); a
    hold gets a cache of its own, unless one was chosen."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    capability = os.environ.get("ATEN_CPU_CAPABILITY")
    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    default = os.path.abspath(default_cache_dir())
    if capability and (chosen is None or os.path.abspath(chosen) == default):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = f"{default}-{capability}"
