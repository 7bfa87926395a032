"""What tailor's reports (eval's report.md/report.html, the compare report) share: the jinja2 templates of
tailor/templates (HTML and SVG autoescaped, one stylesheet), tables, number formatting and inline-SVG plots
(no script, nothing fetched: readable offline in any browser)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f"]
UP, DOWN, GREY = "#2a7d2a", "#b22222", "#888"


@dataclass
class Table:
    """A table as the templates' `table` macro draws it: header, rows of cells, id, title, note, row classes."""

    header: list[str]
    rows: list[list[Any]]
    id: str | None = None
    title: str | None = None
    note: str = ""
    row_classes: list[str] = field(default_factory=list)


def fmt(value: Any, signed: bool = False) -> str:
    """A number with 3 decimals (`+` sign when `signed`); None as `-`; anything else as text."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-" if value is None else str(value)
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def short(text: Any, limit: int = 300) -> str:
    """Row text on one line (backticks as quotes), cut to `limit` characters."""
    text = ("" if text is None else str(text)).replace("`", "'").replace("\n", " ⏎ ")
    return text if len(text) <= limit else text[:limit] + "…"


_ENV = Environment(loader=PackageLoader("tailor", "templates"), autoescape=select_autoescape(["html", "svg"]),
                   trim_blocks=True, lstrip_blocks=True)
_ENV.filters.update(num=fmt, short=short)


def render(template_name: str, **context: Any) -> str:
    """Render a template of tailor/templates (.html and .svg escaped, .md as written)."""
    return _ENV.get_template(template_name).render(**context)


def _el(tag: str, text: Any = None, tip: str | None = None, **attrs: Any) -> dict[str, Any]:
    """One SVG element; `class_`, `text_anchor` ... become `class`, `text-anchor`; floats get one decimal."""
    return {"tag": tag, "text": text, "tip": tip, "attrs": {k.rstrip("_").replace("_", "-"): (
        f"{v:.1f}" if isinstance(v, float) else v) for k, v in attrs.items()}}


def svg(title: str, width: int, height: int, elements: list[dict], cls: str = "plot") -> Markup:
    return Markup(render("plot.svg", title=title, width=width, height=height, elements=elements, cls=cls))


def _scale(lo: float, hi: float, start: float, end: float) -> Callable[[float], float]:
    span = (hi - lo) or 1.0
    return lambda v: start + (v - lo) / span * (end - start)


def _legend(names: list[tuple[int, str]], left: float, y: float, step: int = 110) -> list[dict]:
    """A colour square and a name per (palette index, name), side by side."""
    return [e for n, (i, name) in enumerate(names) for e in (
        _el("rect", x=left + n * step, y=y - 9, width=10, height=10, fill=PALETTE[i % len(PALETTE)]),
        _el("text", name, x=left + n * step + 14, y=y))]


def bars(title: str, values: list[tuple[str, float | None]], width: int = 360) -> Markup:
    """Horizontal bars, one per (label, value); the axis spans 0..max(1, largest value); n/a for None."""
    row, top, left, right = 24, 28, 110, width - 50
    height = top + row * len(values) + 10
    x = _scale(0.0, max([1.0] + [v for _, v in values if v is not None]), left, right)
    out = [_el("line", x1=left, y1=top - 4, x2=left, y2=height - 8, stroke="#555")]
    for i, (label, value) in enumerate(values):
        y = top + i * row
        out.append(_el("text", label, x=left - 6, y=y + 15, text_anchor="end"))
        out += [_el("text", "n/a", x=left + 6, y=y + 15, fill=GREY)] if value is None else [
            _el("rect", class_="bar", x=left, y=y + 3, width=max(x(value) - left, 0.5), height=16,
                fill=PALETTE[i % len(PALETTE)]), _el("text", f"{value:.3f}", x=x(value) + 4, y=y + 15)]
    return svg(title, width, height, out)


def deltas(title: str, items: list[tuple[str, float, float | None, float | None, bool]], width: int = 360,
           cls: str = "plot") -> Markup:
    """Differences (label, delta, low, high, excludes_zero) around a dashed 0 with interval whiskers, coloured when
    significant."""
    row, top, right = 24, 28, width - 20
    left = max(110, min(220, 20 + 7 * max(len(i[0]) for i in items)))
    height = top + row * max(len(items), 1) + 24
    extent = max([0.05] + [abs(v) for _, d, lo, hi, _ in items for v in (d, lo, hi) if v is not None]) * 1.1
    x = _scale(-extent, extent, left, right)
    out = [_el("line", x1=x(0), y1=top - 4, x2=x(0), y2=height - 20, stroke="#555", stroke_dasharray="3,3"),
           _el("text", f"{-extent:+.2f}", x=left, y=height - 6, fill="#666"),
           _el("text", f"{extent:+.2f}", x=right, y=height - 6, text_anchor="end", fill="#666")]
    for i, (label, delta, low, high, significant) in enumerate(items):
        y = top + i * row + 11
        color = (UP if delta > 0 else DOWN) if significant else GREY
        out += [_el("text", label, x=left - 6, y=y + 4, text_anchor="end"),
                _el("rect", tip=f"{label}: {delta:+.4f}", class_="bar", x=min(x(0), x(delta)), y=y - 6,
                    width=max(abs(x(delta) - x(0)), 0.5), height=12, fill=color, fill_opacity="0.35")]
        if low is not None and high is not None:
            out.append(_el("line", class_="whisker", x1=x(low), y1=y, x2=x(high), y2=y, stroke=color, stroke_width=2))
            out += [_el("line", x1=x(v), y1=y - 5, x2=x(v), y2=y + 5, stroke=color, stroke_width=2)
                    for v in (low, high)]
        out.append(_el("circle", cx=x(delta), cy=y, r="3.5", fill=color))
    return svg(title, width, height, out, cls)


def histogram(title: str, series: list[tuple[str, list[float]]], bins: int = 10, width: int = 420) -> Markup:
    """Per-row score histograms over [0, 1], one bar group per bin, one colour per series, with a legend."""
    top, bottom, left, right, height = 28, 40, 36, width - 10, 190
    counts = [[0] * bins for _ in series]
    for c, (_, values) in zip(counts, series):
        for v in values:
            c[min(int(v * bins), bins - 1) if v >= 0 else 0] += 1
    peak = max([1] + [n for c in counts for n in c])
    slot, base = (right - left) / bins, height - bottom
    bar_w = slot * 0.85 / max(len(series), 1)
    out = [_el("line", x1=left, y1=base, x2=right, y2=base, stroke="#555"),
           _el("text", peak, x=left - 4, y=top + 8, text_anchor="end", fill="#666")]
    out += [_el("text", f"{b / bins:.1f}", x=left + b * slot, y=base + 14, text_anchor="middle", fill="#666")
            for b in range(0, bins + 1, 2)]
    out += [_el("rect", class_="bar", x=left + b * slot + s * bar_w, y=base - n / peak * (base - top), width=bar_w,
                height=n / peak * (base - top), fill=PALETTE[s % len(PALETTE)])
            for s, c in enumerate(counts) for b, n in enumerate(c)]
    return svg(title, width, height, out + _legend([(s, f"{name} (n={len(v)})") for s, (name, v) in
                                                   enumerate(series)], left, height - 7))


def proportions(title: str, items: list[tuple[str, float, float, float, int]], width: int = 360) -> Markup:
    """A 0/1 metric per variant: (label, share, low, high, n) as a bar on 0..1 with its interval whisker."""
    row, top, left, right = 24, 28, 110, width - 90
    height = top + row * max(len(items), 1) + 24
    x = _scale(0.0, 1.0, left, right)
    out = [_el("line", x1=left, y1=top - 4, x2=left, y2=height - 20, stroke="#555"),
           _el("text", "0", x=left, y=height - 6, fill="#666"),
           _el("text", "1", x=right, y=height - 6, text_anchor="end", fill="#666")]
    for i, (label, share, low, high, n) in enumerate(items):
        y = top + i * row
        out += [_el("text", label, x=left - 6, y=y + 15, text_anchor="end"),
                _el("rect", class_="bar", x=left, y=y + 3, width=max(x(share) - left, 0.5), height=16,
                    fill=PALETTE[i % len(PALETTE)], fill_opacity="0.5"),
                _el("line", class_="whisker", x1=x(low), y1=y + 11, x2=x(high), y2=y + 11, stroke="#222",
                    stroke_width=2),
                _el("text", f"{share:.3f} (n={n})", x=right + 4, y=y + 15)]
    return svg(title, width, height, out)


def lines(title: str, series: list[tuple[str, list[tuple[float, float]]]], width: int = 720, height: int = 320,
          cls: str = "plot") -> Markup:
    """Overlaid curves (name, [(x, y), ...]) against `step`, coloured by their index in `series`, with a legend."""
    left, right, top, bottom = 56, width - 16, 28, height - 56
    xs, ys = [p[0] for _, c in series for p in c], [p[1] for _, c in series for p in c]
    (x0, x1), (y0, y1) = ((min(v), max(v) if max(v) > min(v) else min(v) + 1) for v in (xs, ys))
    x, y = _scale(x0, x1, left, right), _scale(y0, y1, bottom, top)
    out = [_el("line", class_="axis", x1=left, x2=left, y1=top, y2=bottom),
           _el("line", class_="axis", x1=left, x2=right, y1=bottom, y2=bottom),
           _el("text", "step", x=(left + right) / 2, y=bottom + 30, text_anchor="middle")]
    for i in range(5):
        yv, xv = y0 + (y1 - y0) * i / 4, x0 + (x1 - x0) * i / 4
        out += [_el("line", class_="grid", x1=left, x2=right, y1=y(yv), y2=y(yv)),
                _el("text", f"{yv:.3g}", x=left - 6, y=y(yv) + 4, text_anchor="end"),
                _el("text", f"{xv:.0f}", x=x(xv), y=bottom + 16, text_anchor="middle")]
    drawn = [(i, name, curve) for i, (name, curve) in enumerate(series) if curve]
    for i, name, curve in drawn:
        d = " ".join(f"{'L' if j else 'M'}{x(a):.1f},{y(b):.1f}" for j, (a, b) in enumerate(curve))
        out.append(_el("path", tip=name, class_="curve", data_run=name, fill="none", stroke=PALETTE[i % len(PALETTE)],
                       stroke_width=2, stroke_linecap="round", d=d + (" l0.1,0" if len(curve) == 1 else "")))
    return svg(title, width, height, out + _legend([(i, n) for i, n, _ in drawn], left, height - 8, 180), cls)
