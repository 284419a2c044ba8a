"""Small inline SVG charts for the report: no JavaScript, no fonts to fetch, no CDN."""

from __future__ import annotations

from html import escape

REFERENCE_COLOR = "#4c78a8"
CURRENT_COLOR = "#f58518"


def bars(labels: list[str], reference: list[float], current: list[float], width: int = 420, height: int = 160) -> str:
    """Grouped bars of reference and current shares per bin or category.

    Examples
    --------
    >>> bars(["a", "b"], [0.5, 0.5], [0.2, 0.8]).startswith("<svg")
    True
    """
    top = max([*reference, *current, 1e-12])
    n = max(len(labels), 1)
    plot_h, pad = height - 30, 4
    slot = (width - 2 * pad) / n
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img">']
    for i, (label, ref, cur) in enumerate(zip(labels, reference, current, strict=True)):
        x = pad + i * slot
        for j, (value, color) in enumerate(((ref, REFERENCE_COLOR), (cur, CURRENT_COLOR))):
            h = plot_h * value / top
            parts.append(f'<rect x="{x + j * slot / 2:.1f}" y="{plot_h - h + 4:.1f}" '
                         f'width="{max(slot / 2 - 1, 0.5):.1f}" height="{h:.1f}" fill="{color}">'
                         f'<title>{escape(label)}: '
                         f'{"reference" if j == 0 else "current"} {value:.4f}</title></rect>')
    parts.append(f'<line x1="0" y1="{plot_h + 4}" x2="{width}" y2="{plot_h + 4}" stroke="#999"/>')
    for i in _tick_positions(n):
        x = pad + (i + 0.5) * slot
        parts.append(f'<text x="{x:.1f}" y="{height - 8}" font-size="9" text-anchor="middle">'
                     f"{escape(labels[i][:10])}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _tick_positions(n: int, most: int = 8) -> range:
    return range(0, n, max(1, -(-n // most)))
