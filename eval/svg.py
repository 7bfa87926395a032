"""Tiny inline-SVG charts for the eval report: no JavaScript, no CDN, readable offline in any browser."""

from __future__ import annotations

from html import escape

PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f"]
FONT = 'font-family="system-ui, sans-serif" font-size="12"'


def _svg(width: int, height: int, title: str, body: list[str]) -> str:
    return (f'<svg class="plot" role="img" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" {FONT}><title>{escape(title)}</title>'
            f'<text x="{width / 2:.1f}" y="16" text-anchor="middle" font-weight="bold">{escape(title)}</text>'
            + "".join(body) + "</svg>")


def _scale(lo: float, hi: float, left: float, right: float):
    span = (hi - lo) or 1.0
    return lambda v: left + (v - lo) / span * (right - left)


def bars(title: str, values: list[tuple[str, float | None]], colors: list[str] | None = None,
         width: int = 360) -> str:
    """Horizontal bars, one per (label, value); the axis spans 0..max(1, largest value)."""
    colors = colors or PALETTE
    row, top, left, right = 24, 28, 110, width - 50
    height = top + row * len(values) + 10
    x = _scale(0.0, max([1.0] + [v for _, v in values if v is not None]), left, right)
    body = [f'<line x1="{left}" y1="{top - 4}" x2="{left}" y2="{height - 8}" stroke="#555"/>']
    for i, (label, value) in enumerate(values):
        y = top + i * row
        body.append(f'<text x="{left - 6}" y="{y + 15}" text-anchor="end">{escape(label)}</text>')
        if value is None:
            body.append(f'<text x="{left + 6}" y="{y + 15}" fill="#888">n/a</text>')
            continue
        body.append(f'<rect class="bar" x="{left}" y="{y + 3}" width="{max(x(value) - left, 0.5):.1f}" height="16" '
                    f'fill="{colors[i % len(colors)]}"/>')
        body.append(f'<text x="{x(value) + 4:.1f}" y="{y + 15}">{value:.3f}</text>')
    return _svg(width, height, title, body)


def deltas(title: str, items: list[tuple[str, float, float, float, bool]], width: int = 360) -> str:
    """Differences with interval whiskers: (label, delta, low, high, excludes_zero), a dashed line at 0."""
    row, top, left, right = 24, 28, 110, width - 20
    height = top + row * max(len(items), 1) + 24
    extent = max([0.05] + [abs(v) for _, d, lo, hi, _ in items for v in (d, lo, hi)]) * 1.1
    x = _scale(-extent, extent, left, right)
    body = [f'<line x1="{x(0):.1f}" y1="{top - 4}" x2="{x(0):.1f}" y2="{height - 20}" stroke="#555" '
            f'stroke-dasharray="3,3"/>',
            f'<text x="{left}" y="{height - 6}" fill="#666">{-extent:+.2f}</text>',
            f'<text x="{right}" y="{height - 6}" text-anchor="end" fill="#666">{extent:+.2f}</text>']
    for i, (label, delta, low, high, significant) in enumerate(items):
        y = top + i * row + 11
        color = ("#2a7d2a" if delta > 0 else "#b22222") if significant else "#888"
        body.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end">{escape(label)}</text>')
        body.append(f'<rect class="bar" x="{min(x(0), x(delta)):.1f}" y="{y - 6}" '
                    f'width="{max(abs(x(delta) - x(0)), 0.5):.1f}" height="12" fill="{color}" fill-opacity="0.35"/>')
        body.append(f'<line class="whisker" x1="{x(low):.1f}" y1="{y}" x2="{x(high):.1f}" y2="{y}" '
                    f'stroke="{color}" stroke-width="2"/>')
        for end in (low, high):
            body.append(f'<line x1="{x(end):.1f}" y1="{y - 5}" x2="{x(end):.1f}" y2="{y + 5}" stroke="{color}" '
                        f'stroke-width="2"/>')
        body.append(f'<circle cx="{x(delta):.1f}" cy="{y}" r="3.5" fill="{color}"/>')
    return _svg(width, height, title, body)


def histogram(title: str, series: list[tuple[str, list[float]]], bins: int = 10, width: int = 420) -> str:
    """Per-row score histograms over [0, 1], one bar group per bin, one colour per series, with a legend."""
    top, bottom, left, right = 28, 40, 36, width - 10
    height = 190
    counts = []
    for _, values in series:
        c = [0] * bins
        for v in values:
            c[min(int(v * bins), bins - 1) if v >= 0 else 0] += 1
        counts.append(c)
    peak = max([1] + [n for c in counts for n in c])
    plot_h = height - top - bottom
    slot = (right - left) / bins
    bar_w = slot * 0.85 / max(len(series), 1)
    body = [f'<line x1="{left}" y1="{height - bottom}" x2="{right}" y2="{height - bottom}" stroke="#555"/>',
            f'<text x="{left - 4}" y="{top + 8}" text-anchor="end" fill="#666">{peak}</text>']
    for b in range(bins + 1):
        if b % 2 == 0:
            body.append(f'<text x="{left + b * slot:.1f}" y="{height - bottom + 14}" text-anchor="middle" '
                        f'fill="#666">{b / bins:.1f}</text>')
    for s, c in enumerate(counts):
        for b, n in enumerate(c):
            h = n / peak * plot_h
            body.append(f'<rect class="bar" x="{left + b * slot + s * bar_w:.1f}" y="{height - bottom - h:.1f}" '
                        f'width="{bar_w:.1f}" height="{h:.1f}" fill="{PALETTE[s % len(PALETTE)]}"/>')
    for s, (name, values) in enumerate(series):
        lx = left + s * 110
        body.append(f'<rect x="{lx}" y="{height - 16}" width="10" height="10" fill="{PALETTE[s % len(PALETTE)]}"/>')
        body.append(f'<text x="{lx + 14}" y="{height - 7}">{escape(name)} (n={len(values)})</text>')
    return _svg(width, height, title, body)


def proportions(title: str, items: list[tuple[str, float, float, float, int]], width: int = 360) -> str:
    """A 0/1 metric per variant: (label, share, low, high, n) as a bar on 0..1 with its interval whisker."""
    row, top, left, right = 24, 28, 110, width - 60
    height = top + row * max(len(items), 1) + 24
    x = _scale(0.0, 1.0, left, right)
    body = [f'<line x1="{left}" y1="{top - 4}" x2="{left}" y2="{height - 20}" stroke="#555"/>',
            f'<text x="{left}" y="{height - 6}" fill="#666">0</text>',
            f'<text x="{right}" y="{height - 6}" text-anchor="end" fill="#666">1</text>']
    for i, (label, share, low, high, n) in enumerate(items):
        y = top + i * row
        color = PALETTE[i % len(PALETTE)]
        body.append(f'<text x="{left - 6}" y="{y + 15}" text-anchor="end">{escape(label)}</text>')
        body.append(f'<rect class="bar" x="{left}" y="{y + 3}" width="{max(x(share) - left, 0.5):.1f}" height="16" '
                    f'fill="{color}" fill-opacity="0.5"/>')
        body.append(f'<line class="whisker" x1="{x(low):.1f}" y1="{y + 11}" x2="{x(high):.1f}" y2="{y + 11}" '
                    f'stroke="#222" stroke-width="2"/>')
        body.append(f'<text x="{right + 4:.1f}" y="{y + 15}">{share:.3f} (n={n})</text>')
    return _svg(width, height, title, body)
