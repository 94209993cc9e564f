"""int8 parity on trained KolektorSDD models: each fold's model of a committed cross-
validation, calibrated on its own training images and checked on its held-out test fold.

For each fold and CPU int8 runtime this builds the engine as ``psicbatch build-engine
--precision int8 --calib TRAIN --parity-images TEST`` would, keeping it whatever its
parity, and reports the build's parity against the fp32 model: decision flips over the
whole held-out fold and the mask IoU over the images fp32 judges defective (the masks
``run`` writes by default).

``--backends torch --precision fp32`` checks the torch engine the same way: on a CPU it
computes conv10 in the frequency domain, against the fp32 model's direct convolution.

Usage: python benchmarks/int8_parity.py CV_DIR DATA OUT_DIR [--backends openvino,onnxruntime]
       [--precision int8]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from psicbatch.bench.machine import machine  # noqa: E402
from psicbatch.engines.build import BuildOptions, build_engine  # noqa: E402
from psicbatch.reports import markdown_table  # noqa: E402

TARGET_MASK_IOU = 0.9


def linked_images(ids: list[str], data: Path, folder: Path) -> Path:
    """A folder of links to the images of ``ids`` (``kosNN/PartK``): the build's input."""
    folder.mkdir(parents=True)
    for sample in ids:
        (image,) = (p for p in (data / sample).parent.glob(Path(sample).name + ".*"))
        (folder / sample.replace("/", "_")).with_suffix(image.suffix).symlink_to(image.resolve())
    return folder


def fold_parity(
    cv: Path, data: Path, backends: list[str], precision: str, work: Path
) -> list[dict]:
    splits = json.loads((cv / "splits.json").read_text())
    everything = sorted({sample for fold in splits["test_ids"] for sample in fold})
    results = []
    for index, test_ids in enumerate(splits["test_ids"], start=1):
        model = cv / f"fold{index}" / "model.pt"
        if not model.is_file():
            print(f"fold {index}: no {model}, skipped", flush=True)
            continue
        held_out = set(test_ids)
        train_ids = [sample for sample in everything if sample not in held_out]
        calib = linked_images(train_ids, data, work / f"fold{index}" / "train")
        parity_images = linked_images(test_ids, data, work / f"fold{index}" / "test")
        for backend in backends:
            began = time.perf_counter()
            options = BuildOptions(
                backend=backend,
                precision=precision,
                max_batch=4,
                calib=calib,
                parity_images=parity_images,
                parity_count=len(test_ids),
                check_parity=False,
                out=work / f"fold{index}" / backend,
            )
            _, manifest = build_engine(model, options)
            parity = manifest.parity
            results.append(
                {
                    "fold": index,
                    "backend": f"{backend} {precision}",
                    "calibration_images": parity.get("calibration_images", "-"),
                    "parity_images": parity["images"],
                    "decision_flips": parity["decision_flips"],
                    "images_judged_defective": parity["images_judged_defective"],
                    "mask_iou_judged_defective": parity["mask_iou_mean_judged_defective"],
                    "mask_iou_min_judged_defective": parity["mask_iou_min_judged_defective"],
                    "mask_iou_all": parity["mask_iou_mean"],
                    "max_abs_probability_diff": parity["max_abs_probability_diff"],
                    "build_and_check_s": time.perf_counter() - began,
                }
            )
            print(json.dumps(results[-1]), flush=True)
    return results


def report(results: list[dict], command: str, precision: str) -> str:
    rows = [
        [
            r["fold"],
            r["backend"],
            r["calibration_images"],
            r["parity_images"],
            r["decision_flips"],
            r["images_judged_defective"],
            f"{r['mask_iou_judged_defective']:.3f} / {r['mask_iou_min_judged_defective']:.3f}",
            f"{r['mask_iou_all']:.3f}",
            f"{r['max_abs_probability_diff']:.3g}",
            "yes" if not r["decision_flips"] and r["mask_iou_judged_defective"] >= 0.9 else "no",
        ]
        for r in results
    ]
    header = [
        "fold",
        "runtime",
        "calibration images (train)",
        "parity images (held-out test)",
        "decision flips",
        "images judged defective (fp32)",
        "mask IoU there (mean / min)",
        "mask IoU, all images",
        "max abs probability diff",
        f"target met (0 flips, IoU >= {TARGET_MASK_IOU})",
    ]
    return "\n".join(
        [
            f"# {precision} parity on the trained KolektorSDD fold models",
            "",
            "```",
            command,
            "```",
            "",
            f"Machine: {machine()['cpu']} ({machine().get('isa', 'ISA not recorded')}). "
            "Each fold's model, built as an engine (int8: "
            "quantized with up to 256 of its training images) and compared with its fp32 self "
            "on every image of its held-out test fold (no image in both sets).",
            "",
            *markdown_table(header, rows),
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cv", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--backends", default="openvino,onnxruntime")
    parser.add_argument("--precision", default="int8")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        backends = args.backends.split(",")
        results = fold_parity(args.cv, args.data, backends, args.precision, Path(work))
    command = "python benchmarks/int8_parity.py " + " ".join(sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "parity.json").write_text(
        json.dumps({"command": command, "results": results}, indent=2) + "\n"
    )
    (args.out / "parity.md").write_text(report(results, command, args.precision))
    print(report(results, command, args.precision))


if __name__ == "__main__":
    main()
