"""Host time to score one image in ``eval`` (``evaluate.image_row``: pixel counts, mask and
boundary IoU at the image's original size), by kind of image.

    python benchmarks/scoring_cost.py [--size 1408x512] [--repeats 50]

Run it with ``PYTHONPATH=CHECKOUT`` to time another checkout. On a GPU server this work is
done by the host beside the engine for every image: it bounds evaluation's throughput.
The defect is a 100x30 pixel box, the prediction a shifted 97x30 one.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from psicbatch.data.layouts import SampleRef
from psicbatch.evaluate import image_row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1408x512")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    height, width = (int(side) for side in args.size.split("x"))
    truth = np.zeros((height, width), bool)
    truth[height // 2 : height // 2 + 100, width // 3 : width // 3 + 30] = True
    prediction = np.roll(truth, (5, -2), axis=(0, 1))
    prediction[height // 2 + 102 :] = False
    empty = np.zeros_like(truth)
    sample = SampleRef("a", Path("a.png"), None, True, "g")
    timings = {}
    for kind, true, predicted in (
        ("defective image", truth, prediction),
        ("good image, nothing predicted", empty, empty),
        ("good image, a false alarm", empty, prediction),
    ):
        image_row(sample, 0.9, true, predicted, True)  # warm-up
        began = time.perf_counter()
        for _ in range(args.repeats):
            image_row(sample, 0.9, true, predicted, True)
        timings[kind] = round((time.perf_counter() - began) / args.repeats * 1e3, 2)
    print(json.dumps({"size": args.size, "ms_per_image": timings}))


if __name__ == "__main__":
    main()
