"""``report NEW --compare-to OLD``: two runs' results of the same images side by side."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from psicbatch.cli import main
from psicbatch.data.synth import generate
from psicbatch.run import rle
from psicbatch.run.results_comparison import compare_results


def _mask(rows: slice) -> dict[str, Any]:
    mask = np.zeros((8, 8), bool)
    mask[rows, 2:6] = True
    return rle.encode(mask)


def _table(rows: list[tuple[str, float, bool, dict | None, str | None, int]]) -> pa.Table:
    """Results rows: path, probability, judged defective, mask, error, file size."""
    return pa.Table.from_pylist(
        [
            {
                "path": path,
                "path_bytes": path.encode(),
                "probability": probability,
                "is_defect": defect,
                "mask": mask if mask is not None else rle.empty((8, 8)),
                "mask_area": int(rle.decode(mask).sum()) if mask is not None else 0,
                "error": error,
                "file_size": size,
            }
            for path, probability, defect, mask, error, size in rows
        ]
    )


def test_what_changed_between_two_runs_of_the_same_images() -> None:
    new = _table(
        [
            ("a.png", 0.9, True, _mask(slice(0, 4)), None, 10),  # defective in both
            ("b.png", 0.7, True, _mask(slice(0, 2)), None, 10),  # now defective
            ("c.png", 0.1, False, None, None, 10),  # now good
            ("d.png", 0.2, False, None, None, 10),  # good in both
            ("e.png", 0.3, False, None, None, 10),  # only here
            ("f.png", 0.9, True, _mask(slice(0, 4)), None, 99),  # another file there
            ("g.png", 0.0, False, None, "damaged image", 10),  # an error here
        ]
    )
    old = _table(
        [
            ("a.png", 0.8, True, _mask(slice(2, 6)), None, 10),
            ("b.png", 0.9, True, None, None, 10),  # an earlier result of b.png ...
            ("b.png", 0.2, False, None, None, 10),  # ... and its last, which counts
            ("c.png", 0.95, True, _mask(slice(0, 4)), None, 10),
            ("d.png", 0.25, False, None, None, 10),
            ("f.png", 0.9, True, _mask(slice(0, 4)), None, 10),
            ("g.png", 0.3, False, None, None, 10),
            ("h.png", 0.3, False, None, None, 10),  # only there
        ]
    )
    compared = compare_results(new, old)
    assert compared.both == 4 and compared.changed_files == 1
    assert (compared.only_here, compared.only_there) == (1, 2)  # e; g and h
    assert compared.judged == {
        "defective/defective": 1,
        "defective/good": 1,
        "good/defective": 1,
        "good/good": 1,
    }
    assert (compared.newly_defective, compared.newly_good) == (1, 1)
    np.testing.assert_allclose(sorted(compared.shifts), [0.05, 0.1, 0.5, 0.85], atol=1e-6)
    # Largest change first, each with its row in both tables.
    ours, theirs = compared.changed_rows(0, 10)
    assert (ours.to_pylist(), theirs.to_pylist()) == ([2, 1], [3, 2])  # c.png, then b.png
    assert compared.changed_rows(1, 5)[0].to_pylist() == [1]
    assert compared.mask_ious == [pytest.approx(1 / 3)]  # rows 0-3 against rows 2-5
    line = compared.line()
    assert line.startswith("4 images in both: 1 now judged defective, 1 now judged good, 2")
    assert "mean IoU 0.333" in line and "(1 only here, 2 only there, 1 files changed" in line
    disjoint = compare_results(new, _table([("z.png", 0.5, True, None, None, 1)]))
    assert disjoint.line().startswith("no image has a result in both runs (6 only here, 1")


def test_report_sets_a_run_beside_another_run_of_the_same_images(tmp_path: Path) -> None:
    generate(tmp_path / "data", 24, (96, 96), defect_rate=0.4, seed=3)
    images = str(tmp_path / "data" / "images")
    line, lower = tmp_path / "line.parquet", tmp_path / "lower.parquet"
    runner = CliRunner()
    fast = ["--decoder", "pil", "--device", "cpu", "--precision", "fp32", "-q"]
    for out, extra in ((line, []), (lower, ["--threshold", "0.05"])):
        result = runner.invoke(main, ["run", images, "-o", str(out), *fast, *extra])
        assert result.exit_code == 0, result.output
    judged = {}
    for name, path in (("line", line), ("lower", lower)):
        table = pq.read_table(path, columns=["path", "is_defect"]).to_pydict()
        judged[name] = dict(zip(table["path"], table["is_defect"], strict=True))
    newly = sum(judged["lower"][p] and not judged["line"][p] for p in judged["line"])
    assert newly > 0  # the lower threshold judges more images defective
    page = tmp_path / "compare.html"
    args = ["report", str(lower), "--html", str(page), "--compare-to", str(line), "--top", "2"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"compared with {line}: 24 images in both: {newly} now judged defective, 0 now" in (
        result.output
    )
    text = page.read_text()
    assert f"<h2>Compared with {line}</h2>" in text
    assert f"<h3>Decisions that changed ({newly})</h3>" in text
    section = text[text.index("<h3>Decisions that changed") : text.index("Defect probability")]
    assert len(re.findall(r'<img src="data:image/png', section)) == min(2, newly)
    assert section.count("<li><code>") == max(0, newly - 2)  # the others, named
    assert "judged defective (was good)" in section
    assert "<tr><th>images with a result in both</th><td>24</td></tr>" in text
    # A copy of the same results: nothing changed.
    copy = tmp_path / "copy.parquet"
    copy.write_bytes(line.read_bytes())
    same = tmp_path / "same.html"
    result = runner.invoke(
        main, ["report", str(copy), "--html", str(same), "--compare-to", str(line)]
    )
    assert result.exit_code == 0, result.output
    assert "24 images in both: 0 now judged defective, 0 now judged good, 24 judged alike" in (
        result.output
    )
    assert "<h3>Decisions that changed (0)</h3>" in same.read_text()
    # Refused in one line: no page, the same results, something else.
    for extra, said in (
        (["--csv", str(tmp_path / "x.csv")], "the comparison is on the page: give --html"),
        (["--compare-to", str(lower)], "compares RESULTS with themselves"),
        (["--compare-to", images, "--html", str(tmp_path / "y.html")], "not a results file"),
    ):
        arguments = ["report", str(lower), *extra]
        if "--compare-to" not in extra:
            arguments += ["--compare-to", str(line)]
        refused = runner.invoke(main, arguments)
        assert refused.exit_code in (1, 2) and said in refused.output, refused.output
        assert "Traceback" not in refused.output
