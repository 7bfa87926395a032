"""BENCHMARKS.md: each bench adds its results to the end of its own section (atomically), never after another's."""

from __future__ import annotations

from pathlib import Path

from tailor.runs import atomic_write_text


def add_to_section(path: Path, heading: str, intro: str, lines: list[str], into_table: bool = False) -> None:
    """Insert `lines` at the end of the section `## {heading}` of `path`, or, with `into_table`, right after that
    section's last table row. A missing section (or file) is created at the end, `intro` under its heading."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    title = f"## {heading}"
    doc = text.rstrip("\n").split("\n")
    if title not in doc:
        doc += ["", title, "", *intro.strip("\n").split("\n")]
    start = doc.index(title)
    end = next((i for i in range(start + 1, len(doc)) if doc[i].startswith("## ")), len(doc))
    if into_table:
        rows = [i for i in range(start, end) if doc[i].startswith("|")]
        at = rows[-1] + 1 if rows else end
    else:
        at = end
        while at > start + 1 and doc[at - 1] == "":
            at -= 1
        lines = ["", *lines]
    doc[at:at] = lines
    atomic_write_text(path, "\n".join(doc).rstrip("\n") + "\n")
