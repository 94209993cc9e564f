"""CPU int8 candidates against psicbatch's torch engine, all figures from one run.

The paper's network (width 1, untrained: cost does not depend on the weights), calibrated
on synthetic images at 1408x512, measured engine-only at the paper's sizes, batches 1 and
4, on the same ready-made input. For each size and batch the candidates run one after
the other, so each ratio to the torch engine comes from minutes apart on the same machine.

Candidates: psicbatch's torch engine in the precision ``auto`` gives it on this CPU (bf16
where native and faster, else fp32: emulated bf16 would flatter every int8 ratio on an
AVX2-only CPU), as it opens (channels_last, conv10 as it computes it here); ONNX Runtime on QDQ
graphs with signed symmetric (s8, TensorRT's format) or unsigned asymmetric (u8)
activations and on a QOperator graph (u8); OpenVINO on the same QDQ graphs; PyTorch PT2E
quantization with the x86 Inductor quantizer under ``torch.compile`` (torchao). Weights
are int8, per channel, and the output head stays float in every graph psicbatch builds.
Parity is measured on trained models elsewhere (``int8_parity.sh``).

Usage: python benchmarks/cpu_int8.py OUT_DIR [--sizes 1408x512,640x232,512x512]
       [--batches 1,4] [--seconds 12] [--skip pt2e]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from psicbatch.bench.machine import machine  # noqa: E402
from psicbatch.bench.stats import measure  # noqa: E402
from psicbatch.checkpoint import save_checkpoint, untrained_checkpoint  # noqa: E402
from psicbatch.engines.export import ProbabilityModel, export_onnx  # noqa: E402
from psicbatch.engines.openvino_engine import compile_settings  # noqa: E402
from psicbatch.engines.ort_engine import session_options  # noqa: E402
from psicbatch.engines.parity import synthetic_parity_images  # noqa: E402
from psicbatch.engines.quantize import quantize_int8  # noqa: E402
from psicbatch.engines.spec import EngineSpec, open_engine  # noqa: E402
from psicbatch.model import ModelConfig  # noqa: E402
from psicbatch.network_size import STRIDE  # noqa: E402
from psicbatch.precision import cpu_auto  # noqa: E402
from psicbatch.reports import markdown_table  # noqa: E402
from psicbatch.versions import installed_versions  # noqa: E402

CALIBRATION_SIZE = (1408, 512)
Runner = Callable[[np.ndarray], Any]


def threads() -> int:
    return len(os.sched_getaffinity(0))


def torch_auto(checkpoint_path: Path) -> tuple[str, Runner]:
    """The reference: the torch engine as ``run`` opens a checkpoint here, and its name."""
    precision = cpu_auto().precision
    engine = open_engine(EngineSpec(checkpoint=checkpoint_path, precision=precision), "cpu")
    return f"torch {precision}", lambda batch: engine.infer(torch.from_numpy(batch))


def onnxruntime_session(graph: Path) -> Runner:
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(graph), session_options(threads()), providers=["CPUExecutionProvider"]
    )
    return lambda batch: session.run(None, {"image": batch})


def openvino_request(graph: Path) -> Runner:
    import openvino

    compiled = openvino.Core().compile_model(str(graph), "CPU", compile_settings(threads()))
    request = compiled.create_infer_request()
    return lambda batch: request.infer({0: batch}, share_inputs=True)


def pt2e_inductor(checkpoint: Any, calibration: np.ndarray) -> Runner:
    """PT2E static quantization (x86 Inductor quantizer), compiled with freezing."""
    import torch._inductor.config as inductor_config
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    inductor_config.freezing = True
    model = ProbabilityModel(checkpoint.build_model())
    example = torch.from_numpy(calibration[:2].copy())  # batch 1 would be specialised
    dims = {
        0: torch.export.Dim("batch", min=1, max=16),
        2: STRIDE * torch.export.Dim("height_in_strides", min=1, max=1024),
        3: STRIDE * torch.export.Dim("width_in_strides", min=1, max=1024),
    }
    exported = torch.export.export(model, (example,), dynamic_shapes={"image": dims})
    quantizer = x86.X86InductorQuantizer()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported.module(), quantizer)
    for image in calibration:
        prepared(torch.from_numpy(image[None].copy()))
    compiled = torch.compile(convert_pt2e(prepared), dynamic=False)  # kernels for each shape

    def run(batch: np.ndarray) -> Any:
        with torch.no_grad():
            return compiled(torch.from_numpy(batch))

    return run


def candidates(work: Path, skip: set[str]) -> dict[str, Runner]:
    checkpoint = untrained_checkpoint(ModelConfig(width=1.0), CALIBRATION_SIZE)
    checkpoint_path = save_checkpoint(checkpoint, work / "paper-width-1.pt")
    calibration = synthetic_parity_images(checkpoint, CALIBRATION_SIZE)
    fp32 = export_onnx(checkpoint, work / "fp32.onnx", CALIBRATION_SIZE, True)
    graphs = {
        "s8": quantize_int8(fp32, work / "qdq-s8.onnx", calibration, "s8"),
        "u8": quantize_int8(fp32, work / "qdq-u8.onnx", calibration, "u8"),
    }
    reference, runner = torch_auto(checkpoint_path)
    runners = {reference: runner}  # first: compare() divides by it
    for activations, graph in graphs.items():
        runners[f"onnxruntime int8 QDQ {activations}"] = onnxruntime_session(graph)
    qoperator = quantize_int8(fp32, work / "qop-u8.onnx", calibration, "u8", operator_form=True)
    runners["onnxruntime int8 QOperator u8"] = onnxruntime_session(qoperator)
    for activations, graph in graphs.items():
        runners[f"openvino int8 QDQ {activations}"] = openvino_request(graph)
    if "pt2e" not in skip:
        runners["pt2e x86 inductor int8"] = pt2e_inductor(checkpoint, calibration)
    return runners


def compare(
    runners: dict[str, Runner], sizes: list[tuple[int, int]], batches: list[int], seconds: float
) -> list[dict[str, Any]]:
    reference = next(iter(runners))
    results = []
    generator = np.random.default_rng(0)
    for size in sizes:
        for batch in batches:
            images = generator.standard_normal((batch, 1, *size), dtype=np.float32)
            for name, runner in runners.items():
                began = time.perf_counter()

                def call(runner: Runner = runner, images: np.ndarray = images) -> None:
                    runner(images)  # timed by the clock (a returned value would be read as one)

                measured = measure(
                    call,
                    batch,
                    warmup_calls=1,
                    window_seconds=seconds / 4,
                    max_seconds=seconds,
                )
                result = {
                    "candidate": name,
                    "size": f"{size[0]}x{size[1]}",
                    "batch": batch,
                    "images_per_s": measured.throughput,
                    "first_call_s": measured.warmup_seconds[0],
                    "stable": measured.stable,
                    "measured_s": time.perf_counter() - began,
                }
                results.append(result)
                print(json.dumps(result), flush=True)
    for result in results:
        same_shape = next(
            r
            for r in results
            if (r["candidate"], r["size"], r["batch"])
            == (reference, result["size"], result["batch"])
        )
        result["reference"] = reference
        result["x_reference"] = result["images_per_s"] / same_shape["images_per_s"]
    return results


def report(results: list[dict[str, Any]], command: str, about: dict[str, Any]) -> str:
    rows = [
        [
            r["size"],
            r["batch"],
            r["candidate"],
            f"{1 / r['images_per_s']:.3f}",
            f"{r['images_per_s']:.2f}",
            f"{r['x_reference']:.2f}x",
            "yes" if r["stable"] else "no",
        ]
        for r in results
    ]
    reference = results[0]["reference"]
    header = ["size", "batch", "candidate", "s/image", "images/s", f"x {reference}", "stable"]
    m = about["machine"]
    return "\n".join(
        [
            f"# CPU int8 candidates against {reference}",
            "",
            "```",
            command,
            "```",
            "",
            f"Machine: {m['cpu']}, {about['threads']} threads; {about['cpu_flags']}. "
            f"Libraries: {', '.join(f'{k} {v}' for k, v in about['libraries'].items())}.",
            "",
            "The paper's network (width 1), engine-only on ready-made input. Each ratio "
            f"divides by {reference} (`auto`'s precision here: {cpu_auto().reason}) "
            "at the same size and batch, measured in this run. "
            "`stable`: three consecutive measurement windows within 10%.",
            "",
            *markdown_table(header, rows),
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--sizes", default="1408x512,640x232,512x512")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--skip", default="", help="comma-separated: pt2e")
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    torch.set_num_threads(threads())
    flags = Path("/proc/cpuinfo").read_text().split()
    about = {
        "machine": machine(),
        "threads": threads(),
        "cpu_flags": " ".join(f for f in ("avx512_vnni", "avx512_bf16", "amx_int8") if f in flags)
        or "no VNNI/BF16/AMX",
        "libraries": installed_versions(["torch", "onnxruntime", "openvino", "torchao"]),
    }
    with tempfile.TemporaryDirectory() as work:
        began = time.perf_counter()
        runners = candidates(Path(work), set(filter(None, args.skip.split(","))))
        about["build_s"] = time.perf_counter() - began
        results = compare(runners, sizes, batches, args.seconds)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/cpu_int8.py " + " ".join(sys.argv[1:])
    (args.out / "comparison.json").write_text(
        json.dumps({"command": command, **about, "results": results}, indent=2) + "\n"
    )
    (args.out / "comparison.md").write_text(report(results, command, about))
    print(report(results, command, about))


if __name__ == "__main__":
    main()
