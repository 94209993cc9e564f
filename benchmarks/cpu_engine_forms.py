"""The torch engine's forms on this CPU against each other, one run: layout and ReLUs.

The paper's network (untrained: cost does not depend on the weights) opened as the torch
engine on this CPU (BatchNorm folded, conv10 computed as the engine does here) in three
forms:
- contiguous layout, separate ReLUs (the fp32 engine's form before this comparison);
- channels_last, separate ReLUs;
- channels_last with each ReLU fused into its convolution (the engine as it opens).
Best of a few calls per form at batch 1, the forms alternated twice so drift shows, and
the largest difference of each form's outputs from the first's. Decides the engine's
layout and fusion on CPUs (``psicbatch/engines/torch_engine.py``, ``fused_relu.py``).

With ``--train WIDTH:SIZE:BATCH`` it times training steps of PSIC-Net at that width
instead (``frequency_conv.py``'s step, conv10 as ``train`` computes it here), with the
model contiguous and channels_last: decides ``train``'s layout on CPUs.

Usage: python benchmarks/cpu_engine_forms.py OUT_FILE [--size 1408x512]
       [--precisions fp32,bf16] [--calls 3] [--train 0.5:704x256:4]
Hold the kernels to an instruction set with ONEDNN_MAX_CPU_ISA (oneDNN),
ATEN_CPU_CAPABILITY (torch) and MKL_ENABLE_INSTRUCTIONS (MKL); the CPU line says so.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from frequency_conv import compare_training, timed_calls, write_report  # noqa: E402

from psicbatch.checkpoint import save_checkpoint, untrained_checkpoint  # noqa: E402
from psicbatch.engines import torch_engine  # noqa: E402
from psicbatch.engines.base import Engine  # noqa: E402
from psicbatch.engines.frequency_conv import frequency_domain_pays  # noqa: E402
from psicbatch.engines.fused_relu import fusion_works  # noqa: E402
from psicbatch.engines.spec import EngineSpec, open_engine  # noqa: E402
from psicbatch.model import ModelConfig  # noqa: E402
from psicbatch.precision import cpu_auto  # noqa: E402

FORMS = ("contiguous", "channels_last", "channels_last + fused ReLU")


def opened(checkpoint: Path, precision: str, size: tuple[int, int], form: str) -> Engine:
    torch_engine.fusion_works = fusion_works if "fused" in form else lambda dtype: False  # type: ignore[assignment]
    spec = EngineSpec(checkpoint=checkpoint, precision=precision, input_size=size)
    engine = open_engine(spec, "cpu", max_batch=1)
    if form == "contiguous":  # one input channel: the batch itself is in either layout
        engine.model.to(memory_format=torch.contiguous_format)  # type: ignore[attr-defined]
    return engine


def rows_for(checkpoint: Path, precision: str, size: tuple[int, int]) -> list[str]:
    torch.manual_seed(0)
    image = torch.rand(1, 1, *size) * 4 - 2
    rows = []
    for round_number in (1, 2):
        results = [
            timed_calls(opened(checkpoint, precision, size, form), image, ARGS.calls)
            for form in FORMS
        ]
        (base, reference), *others = results
        cells = [f"{base:.3f}"]
        for seconds, outputs in others:
            difference = max(
                (a - b).abs().max().item() for a, b in zip(outputs, reference, strict=True)
            )
            cells.append(f"{seconds:.3f} ({base / seconds:.2f}x, {difference:.0e})")
        rows.append(f"| {precision} | {round_number} | {' | '.join(cells)} |")
        print(rows[-1], flush=True)
    return rows


def training_rows() -> list[str]:
    """conv10 as ``train`` computes it here (by FFT where that pays), in either layout."""
    return compare_training(
        ARGS,
        ("contiguous", "channels_last"),
        lambda precision, last: {
            "frequency": frequency_domain_pays(torch.device("cpu"), precision),
            "layout": torch.channels_last if last else torch.contiguous_format,
        },
    )


def inference_rows() -> list[str]:
    size = tuple(map(int, ARGS.size.split("x")))
    rows = [
        f"Inference: width 1, {ARGS.size}, batch 1. Seconds per image (best of the calls); "
        "in brackets, contiguous / this form and the largest difference of its "
        "probabilities and masks from the contiguous form's.",
        "",
        f"| precision | round | {' | '.join(FORMS)} |",
        "| --- | --- | --- | --- | --- |",
    ]
    with tempfile.TemporaryDirectory() as work:
        checkpoint = save_checkpoint(untrained_checkpoint(ModelConfig()), Path(work) / "model.pt")
        for precision in ARGS.precisions.split(","):
            rows += rows_for(checkpoint, precision, size)
    return rows


def main() -> None:
    write_report(
        ARGS.out,
        "Torch engine forms on this CPU",
        f"; the fused operator works here: fp32 {fusion_works(torch.float32)}, "
        f"bf16 {fusion_works(torch.bfloat16)}; precision {cpu_auto().reason}",
        training_rows if ARGS.train else inference_rows,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", default="1408x512")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--train", help="WIDTH:SIZE:BATCH, e.g. 0.5:704x256:4")
    ARGS = parser.parse_args()
    main()
