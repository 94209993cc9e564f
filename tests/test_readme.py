"""The README's contents list and its links, and the benchmark reports' links: a section
renamed or a result folder moved leaves no link that leads nowhere."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def headings(text: str) -> list[tuple[int, str]]:
    """The ## and ### headings outside code blocks, by level."""
    found, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"(#{2,3}) (.*)", line)):
            found.append((len(match.group(1)), match.group(2)))
    return found


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but hyphens dropped, spaces
    as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def test_the_contents_list_every_section_in_order_with_its_anchor() -> None:
    text = (ROOT / "README.md").read_text()
    listed = text.split("## Contents\n", 1)[1].split("\n## ", 1)[0].strip().splitlines()
    sections = [(level, title) for level, title in headings(text) if title != "Contents"]
    expected = [f"{'  ' * (level - 2)}- [{title}](#{anchor(title)})" for level, title in sections]
    assert listed == expected
    assert text.count(listed[0]) == 1, "a second list of contents outside '## Contents'"


def test_every_relative_link_leads_to_a_file_or_a_heading() -> None:
    documents = [ROOT / "README.md", *sorted((ROOT / "benchmarks").rglob("*.md"))]
    broken = []
    for document in documents:
        text = document.read_text()
        anchors = {anchor(title) for _, title in headings(text)}
        for target in LINK.findall(text):
            path, _, fragment = target.partition("#")
            if "://" in path:
                continue
            if path and not (document.parent / path).exists():
                broken.append(f"{document.relative_to(ROOT)}: {target}")
            elif not path and fragment not in anchors:
                broken.append(f"{document.relative_to(ROOT)}: #{fragment}")
    assert not broken


def test_the_benchmarks_index_names_every_script_and_result_folder() -> None:
    """benchmarks/README.md is where a result is found from its scenario and a scenario
    from its result: one added without a line there is lost among the others."""
    benchmarks = ROOT / "benchmarks"
    index = (benchmarks / "README.md").read_text()
    scripts = [path.name for path in benchmarks.iterdir() if path.suffix in {".py", ".sh"}]
    folders = [path.name for path in (benchmarks / "results").iterdir() if path.is_dir()]
    missing = [name for name in scripts if f"`{name}`" not in index]
    missing += [name for name in folders if f"results/{name}/" not in index]
    assert not missing
