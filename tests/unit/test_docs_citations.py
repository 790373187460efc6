"""Tests, sources and benchmarks cite only what the repository holds: every `docs/<page>.md` they name exists,
every `docs/algorithms.md §N` they cite is a section of it, and nothing points outside the repository."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CODE = [p for d in ("alignkit", "tests", "benchmarks") for p in (ROOT / d).rglob("*.py")]
OUTSIDE = re.compile(r"\.\./shared|shared/reference|reference/algorithms")


def test_no_file_cites_a_file_outside_the_repository():
    here = Path(__file__).name
    found = [f"{p.relative_to(ROOT)}:{i}" for p in CODE if p.name != here
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if OUTSIDE.search(line)]
    assert not found, f"these lines cite files outside the repository: {found}"


def test_every_cited_page_and_section_exists():
    sections = set(re.findall(r"^## (\d+)\.", (ROOT / "docs" / "algorithms.md").read_text(encoding="utf-8"), re.M))
    assert {"9", "10", "13"} <= sections
    for p in CODE:
        if p.name == Path(__file__).name:
            continue
        text = p.read_text(encoding="utf-8")
        for page in re.findall(r"docs/([\w.-]+\.md)", text):
            assert (ROOT / "docs" / page).is_file(), f"{p.relative_to(ROOT)} cites docs/{page}, which does not exist"
        for section in re.findall(r"algorithms\.md §(\d+)", text):
            assert section in sections, f"{p.relative_to(ROOT)} cites docs/algorithms.md §{section}, not a section"
        bare = re.findall(r"(?<!docs/)\balgorithms\.md", text)
        assert not bare, f"{p.relative_to(ROOT)} cites algorithms.md without its place (docs/algorithms.md)"
