"""The torch engine with its large kernels direct and in the frequency domain, one run.

The paper's network (untrained: cost does not depend on the weights) opened as the torch
engine on this CPU, once computing conv10 directly and once in the frequency domain
(``psicbatch/engines/frequency_conv.py``), each precision given, best of a few batches,
the two methods alternated twice so drift shows. Also the largest difference between
the two methods' outputs on the same images. Decides where the engine uses the
frequency form (``frequency_domain_pays``).

With ``--train WIDTH:SIZE:BATCH`` it times training steps instead: forward, backward
and the SGD update of PSIC-Net at that width (eq. (2) on random masks plus the
classification loss, in train mode), in fp32 and under bf16 autocast as ``train`` runs.

Usage: python benchmarks/frequency_conv.py OUT_FILE [--sizes 1408x512,512x512]
       [--precisions fp32,bf16] [--batch 1] [--calls 2] [--train 0.5:704x256:4]
Hold the kernels to an instruction set with ONEDNN_MAX_CPU_ISA (oneDNN),
ATEN_CPU_CAPABILITY (torch) and MKL_ENABLE_INSTRUCTIONS (MKL: matrix products, FFTs).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from psicbatch import hardware  # noqa: E402
from psicbatch.checkpoint import save_checkpoint, untrained_checkpoint  # noqa: E402
from psicbatch.engines import frequency_conv  # noqa: E402
from psicbatch.engines.base import Engine  # noqa: E402
from psicbatch.engines.frequency_conv import large_kernels_in_frequency_domain  # noqa: E402
from psicbatch.engines.spec import EngineSpec, open_engine  # noqa: E402
from psicbatch.losses import weighted_cross_entropy  # noqa: E402
from psicbatch.model import ModelConfig, PSICNet  # noqa: E402
from psicbatch.precision import autocast  # noqa: E402


def timed_calls(
    engine: Engine, images: torch.Tensor, calls: int
) -> tuple[float, tuple[torch.Tensor, torch.Tensor]]:
    """Best seconds per image over ``calls`` batches after a warm-up (first-call
    allocations and kernel choices), and the outputs."""
    outputs = engine.infer(images)
    times = []
    for _ in range(calls):
        began = time.perf_counter()
        engine.infer(images)
        times.append((time.perf_counter() - began) / len(images))
    return min(times), outputs


def timed_engine(
    checkpoint: Path, precision: str, size: tuple[int, int], frequency: bool, images: torch.Tensor
) -> tuple[float, tuple[torch.Tensor, torch.Tensor]]:
    """``timed_calls`` of the engine with its choice of method replaced by ``frequency``."""
    frequency_conv.frequency_domain_pays = lambda device, precision: frequency  # type: ignore[assignment]
    spec = EngineSpec(checkpoint=checkpoint, precision=precision, input_size=size)
    return timed_calls(open_engine(spec, "cpu", max_batch=len(images)), images, ARGS.calls)


def timed_training(
    width: float,
    size: tuple[int, int],
    batch: int,
    precision: str,
    calls: int,
    frequency: bool,
    layout: torch.memory_format = torch.contiguous_format,
) -> float:
    """Best seconds per image of a training step, conv10 direct or by FFT, the model's
    weights in ``layout``."""
    torch.manual_seed(0)
    model = PSICNet(ModelConfig(width=width)).train()
    model.to(memory_format=layout)  # type: ignore[call-overload]
    if frequency:
        large_kernels_in_frequency_domain(model)
    images = torch.rand(batch, 1, *size) * 4 - 2
    masks = torch.rand(batch, 1, *size) > 0.99
    labels = torch.ones(batch, 1)
    times = []
    for _ in range(calls + 1):  # the first: allocations and kernel choices
        began = time.perf_counter()
        with autocast(torch.device("cpu"), precision):
            seg_logits, cls_logits = model(images)
            loss = weighted_cross_entropy(seg_logits.float(), masks)
            loss = loss + F.binary_cross_entropy_with_logits(cls_logits.float(), labels)
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(parameter.grad, alpha=-1e-3)
        times.append((time.perf_counter() - began) / batch)
    return min(times[1:])


def compare_training(
    args: argparse.Namespace,
    names: tuple[str, str],
    settings: Callable[[str, bool], dict[str, Any]],
) -> list[str]:
    """Training steps of the network ``args.train`` (WIDTH:SIZE:BATCH) in two settings
    (of ``timed_training``: ``settings(precision, second)``), two rounds per precision."""
    width, size_text, batch = args.train.split(":")
    size = tuple(map(int, size_text.split("x")))
    first, second = names
    rows = [
        f"Training steps: width {width}, {size_text}, batch {batch}; seconds per image.",
        "",
        f"| precision | round | {first} | {second} | {first} / {second} |",
        "| --- | --- | --- | --- | --- |",
    ]
    for precision in args.precisions.split(","):
        for round_number in (1, 2):
            a, b = (
                timed_training(
                    float(width), size, int(batch), precision, args.calls, **settings(precision, s)
                )
                for s in (False, True)
            )
            rows.append(f"| {precision} | {round_number} | {a:.3f} | {b:.3f} | {a / b:.2f} |")
            print(rows[-1], flush=True)
    return rows


def training_rows() -> list[str]:
    return compare_training(ARGS, ("direct", "frequency"), lambda _, fft: {"frequency": fft})


def inference_rows() -> list[str]:
    rows = [
        "| size | precision | round | direct s/image | frequency s/image | direct / frequency "
        "| largest difference (probability, mask) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    with tempfile.TemporaryDirectory() as work:
        checkpoint = save_checkpoint(untrained_checkpoint(ModelConfig()), Path(work) / "model.pt")
        for size_text in ARGS.sizes.split(","):
            size = tuple(map(int, size_text.split("x")))
            torch.manual_seed(0)
            images = torch.rand(ARGS.batch, 1, *size) * 4 - 2
            for precision in ARGS.precisions.split(","):
                for round_number in (1, 2):
                    direct, (p0, m0) = timed_engine(checkpoint, precision, size, False, images)
                    frequency, (p1, m1) = timed_engine(checkpoint, precision, size, True, images)
                    difference = f"{(p1 - p0).abs().max():.1e}, {(m1 - m0).abs().max():.1e}"
                    rows.append(
                        f"| {size_text} | {precision} | {round_number} | {direct:.3f} "
                        f"| {frequency:.3f} | {direct / frequency:.2f} | {difference} |"
                    )
                    print(rows[-1], flush=True)
    return rows


def write_report(out: Path, title: str, cpu_notes: str, rows: Callable[[], list[str]]) -> None:
    """``out``: the title, this CPU and the command, then the rows (printed as they come,
    so a long run shows its progress)."""
    lines = [
        f"# {title}",
        "",
        f"CPU: {hardware.cpu_model()} ({hardware.cpu_precisions().describe()}); "
        f"{torch.get_num_threads()} threads; "
        f"torch {torch.__version__}{cpu_notes}.",
        f"Command: python {' '.join(sys.argv)}",
        "",
    ]
    print("\n".join(lines), flush=True)
    lines += rows()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


def main() -> None:
    title = "training" if ARGS.train else f"inference, width 1, batch {ARGS.batch}"
    write_report(
        ARGS.out,
        f"Large kernels direct and in the frequency domain: {title}",
        "",
        training_rows if ARGS.train else inference_rows,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--sizes", default="1408x512,512x512")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--calls", type=int, default=2)
    parser.add_argument("--train", help="WIDTH:SIZE:BATCH, e.g. 0.5:704x256:4")
    ARGS = parser.parse_args()
    main()
