"""Self-contained HTML pages: inline CSS, plots as inline PNG, everything escaped."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence
from typing import Any

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1200px;color:#1d2330;line-height:1.45;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.25rem;margin-top:2rem;
border-bottom:1px solid #d8dde6;padding-bottom:.2rem}.sub{color:#5b6475}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
th,td{border:1px solid #d8dde6;padding:.25rem .55rem;text-align:right}
th{background:#f1f4f9}td.l,th.l{text-align:left}
.bad{color:#b3261e;font-weight:600}.ok{color:#1b7f3b}
img{max-width:100%;border:1px solid #e3e7ee;margin:.4rem 0}
.note{background:#f7f9fc;border-left:3px solid #7a8ca8;padding:.4rem .8rem;margin:.6rem 0}
code{background:#f1f4f9;padding:0 .25rem}
"""


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def fmt(x: Any) -> str:
    if isinstance(x, bool) or x is None:
        return esc("" if x is None else x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return f"{x:,.4g}" if abs(x) < 1000 else f"{x:,.0f}"
    return esc(x)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], left: int = 1,
          classes: Sequence[str] | None = None) -> str:
    out = ["<table><tr>"]
    out += [f"<th class='{'l' if i < left else ''}'>{esc(h)}</th>" for i, h in enumerate(headers)]
    out.append("</tr>")
    for r_i, row in enumerate(rows):
        cls = f" class='{classes[r_i]}'" if classes and classes[r_i] else ""
        out.append(f"<tr{cls}>")
        out += [f"<td class='{'l' if i < left else ''}'>{fmt(v)}</td>" for i, v in enumerate(row)]
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def figure_png(fig: Any) -> str:
    """An <img> with the figure as inline PNG (and the figure closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f"<img alt='plot' src='data:image/png;base64,{data}'>"


def page(title: str, subtitle: str, body: Iterable[str]) -> str:
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width'><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1>"
            f"<p class='sub'>{esc(subtitle)}</p>" + "".join(body) + "</body></html>\n")


def write_atomic(path: Any, text: str) -> None:
    import os
    from pathlib import Path

    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, p)
