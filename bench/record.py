"""The one recorder of BENCHMARKS.md: each bench adds its results to the end of its own section (atomically), never
after another's."""

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


def add_table_rows(path: Path, heading: str, intro: str, header: list[str], rows: list[str]) -> None:
    """Append `rows` to the section's tables when its table has `header`; otherwise (a new section, or older tables
    with other columns) start a `header` table at the section's end."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    title = f"## {heading}\n"
    section = text.split(title, 1)[1].split("\n## ", 1)[0] if title in text else ""
    if header[0] in section.splitlines():
        add_to_section(path, heading, intro, rows, into_table=True)
    else:
        add_to_section(path, heading, intro, [*header, *rows])
