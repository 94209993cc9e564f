"""What a gated run saves when images are judged defect-free but their maps fire.

``psicbatch run --masks gated`` (the default) gives an image judged defect-free an empty
mask, so its mask is not computed. This runs ``psicbatch run``'s path with the null
engine's noisy outputs (an untrained network's: about half the pixels above the
segmentation threshold) at 1408x512, decoding excluded, with ``--threshold 1`` (every
image judged defect-free), with the gate and without it (its masks computed on the
device and dropped, as before the gate), and for scale with every image judged
defective (its masks computed and encoded), alternating; it reports images/s and
post-processing time per image for each. All from one run.

Usage: python benchmarks/gated_masks.py OUT_DIR [--images 640] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from unittest.mock import patch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from psicbatch.bench.machine import machine  # noqa: E402
from psicbatch.bench.measurements import end_to_end  # noqa: E402
from psicbatch.decisions import Rule  # noqa: E402
from psicbatch.engines.spec import EngineSpec  # noqa: E402
from psicbatch.reports import markdown_table  # noqa: E402

SIZE = (1408, 512)
BATCH = 8
SETTINGS = {  # name -> (classification threshold, gate on)
    "defect-free, gated": (1.0, True),
    "defect-free, masks computed anyway": (1.0, False),
    "defective, masks computed and encoded": (None, True),
}


def measured(spec: EngineSpec, paths: list[Path], folder: Path, setting: tuple) -> dict:
    threshold, gate = setting
    if gate:
        return end_to_end(spec, paths, BATCH, folder, "cpu", "null", threshold)
    # The worker (in this process) asks the rule whether the probability can decide alone.
    with patch.object(Rule, "needs_probability", property(lambda _: False)):
        return end_to_end(spec, paths, BATCH, folder, "cpu", "null", threshold)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    spec = EngineSpec(null_outputs="noisy", input_size=SIZE)
    paths = [Path(f"null/{index:07d}.png") for index in range(args.images)]
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for round_number in range(args.rounds):
            for number, (name, setting) in enumerate(SETTINGS.items()):
                where = Path(folder) / f"{round_number}-{number}"
                result = measured(spec, paths, where, setting)
                results.append({"setting": name, **result})
                print(name, f"{result['throughput_items_per_s']:.0f} images/s", flush=True)
    report = {
        "machine": machine(),
        "command": "python benchmarks/gated_masks.py " + " ".join(sys.argv[1:]),
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gated_masks.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "gated_masks.md").write_text(markdown(report))


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# Gated masks: {m['cpu']} ({m.get('isa', 'ISA not recorded')}), {m['cores']} cores",
        "",
        f"`{report['command']}`: null engine, noisy outputs, {SIZE[0]}x{SIZE[1]}, batch "
        f"{BATCH}, decoding excluded; settings alternate.",
        "",
    ]
    rows = [
        [
            r["setting"],
            r["images"],
            f"{r['throughput_items_per_s']:.0f}",
            f"{1000 * r['stage_seconds_per_image'].get('postprocess', 0.0):.2f}",
        ]
        for r in report["results"]
    ]
    lines += markdown_table(["setting", "images", "images/s", "postprocess ms/image"], rows)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
