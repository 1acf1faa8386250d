"""Numbers in the docs that cannot go stale unseen: a measured time says the commit it was measured at (per
section of README.md and docs/*.md), and `--help` states the defaults (tests/test_settings.py)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIME = re.compile(r"\b\d[\d,.]*\s*(?:s|min|minutes?|seconds?|hours?|h)\b"
                  r"|\b(?:about|a few|several) (?:\w+ )?(?:minutes|hours|seconds)\b|\bminutes on\b")
COMMIT = re.compile(r"\bcommits? [0-9a-f]{7,40}\b")
# a sentence stating a constant of the code or an assumption, not a measurement
STATED = re.compile(r"\ba fixed\b|\bassumed\b")


def sections(text: str) -> list[tuple[int, str]]:
    """(first line, text) of each part of a markdown file between headings."""
    starts = [0, *(m.start() for m in re.finditer(r"^#+ ", text, re.M)), len(text)]
    return [(text[:a].count("\n") + 1, text[a:b]) for a, b in zip(starts, starts[1:], strict=False) if b > a]


def measured_times(section: str) -> list[str]:
    sentences = re.split(r"(?<=[.;:])\s+|\n(?=[-|*#`])", section)
    return [m.group(0) for sentence in sentences if not STATED.search(sentence) for m in TIME.finditer(sentence)]


def test_every_measured_time_in_the_docs_says_its_commit():
    stale = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for line, section in sections(path.read_text()):
            times = measured_times(section)
            if times and not COMMIT.search(section):
                stale.append(f"{path.name}:{line} quotes {times[:3]} without the commit it was measured at")
    assert not stale, "\n".join(stale)


def test_the_check_finds_a_time_without_a_commit_and_passes_a_stamped_or_stated_one():
    assert measured_times("The demo takes 12 minutes on 2 cores.") == ["12 minutes"]
    assert measured_times("`--preset quick` takes about 4 minutes.") == ["about 4 minutes"]
    assert not measured_times("compare and report a fixed 8 s and 2 s.")
    assert not measured_times("a 70B judge at an assumed 20 s per judged latent.")
    assert COMMIT.search("4 min 16 s on 2 cores at commit 52881c8")
    assert not COMMIT.search("4 min 16 s on 2 cores at the last commit")
