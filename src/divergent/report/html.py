"""The self-contained HTML report: inline CSS, figures inlined as base64 PNG, no scripts, no network."""
from __future__ import annotations

import base64
import html
import math

import pandas as pd

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1120px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em} h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
.meta{color:#555;font-size:.9em} figure{margin:1em 0} figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.88em;color:#444} table{border-collapse:collapse;font-size:.85em;margin:.6em 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right} th{background:#f4f4f4} td.l,th.l{text-align:left}
.holds{background:#d7efe3} .contradicted{background:#fbe0d2} .inconclusive{background:#eee}
.verdict{font-weight:600;padding:1px 6px;border-radius:3px} .missing{color:#8a5a00;background:#fff6e0;padding:.5em;border-left:3px solid #E69F00}
.files{font-size:.82em;color:#555} nav ol{columns:2}
.glance{border:1px solid #ddd;padding:.4em .8em;margin:1em 0;background:#fafafa} .glance ul{margin:.3em 0}
.gallery{display:flex;gap:1.5em;flex-wrap:wrap} .gallery .side{flex:1 1 420px} .gallery h4{margin:.4em 0;font-size:1em}
.thumbs{display:flex;flex-wrap:wrap;gap:4px;margin:.3em 0 .8em} figure.thumb{margin:0;width:84px;font-size:.72em;color:#444}
figure.thumb img{image-rendering:pixelated;border:1px solid #ccc;display:block} .noimg{width:80px;height:60px;border:1px dashed #bbb;font-size:.85em;overflow:hidden;word-break:break-all}
footer.env{margin-top:3em;border-top:1px solid #ddd;font-size:.82em;color:#555}
"""


def esc(x) -> str:
    return html.escape(str(x), quote=True)


def fmt_pct(x, digits: int = 2) -> str:
    """A fraction as a percentage string, as used everywhere in the report."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "n/a"
    return f"{100 * x:.{digits}f}%" if math.isfinite(x) else "n/a"


def fmt_pp(x, digits: int = 2) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "n/a"
    return f"{100 * x:+.{digits}f} pp" if math.isfinite(x) else "n/a"


def fmt_num(x, digits: int = 4) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "n/a" if x is None else str(x)
    return f"{x:.{digits}f}" if math.isfinite(x) else "n/a"


#: the findings' scopes in words
SCOPE_TEXT = {"all": "all models", "band": "within the accuracy band"}


def fmt_value(x, digits: int = 4) -> str:
    """A number in a table cell (report.tables.fmt_value: blank when missing, integers as integers,
    scientific notation for small and large magnitudes)."""
    from .tables import fmt_value as _fv

    return _fv(x, digits)


def table_html(df: pd.DataFrame, formats: dict | None = None, row_class: str | None = None,
               left: tuple[str, ...] = ()) -> str:
    """An HTML table; formats maps column -> callable(value) -> str."""
    from .tables import integer_column

    formats = formats or {}
    ints = {c: integer_column(df[c]) for c in df.columns}
    head = "".join(f'<th class="{"l" if c in left else ""}">{esc(c)}</th>' for c in df.columns)
    rows = []
    for _, r in df.iterrows():
        cls = f' class="{esc(r[row_class])}"' if row_class and row_class in r else ""
        cells = "".join(
            f'<td class="{"l" if c in left else ""}">'
            f'{"" if _missing(r[c]) else esc(formats[c](r[c]) if c in formats else _plain(r[c], ints.get(c)))}</td>'
            for c in df.columns)
        rows.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _missing(v) -> bool:
    from .tables import is_missing

    return is_missing(v)


def _plain(v, integer: bool | None = None) -> str:
    """A cell without a column format: the one rule of report.tables.fmt_value (a missing cell is blank)."""
    from .tables import fmt_value as _fv

    return _fv(v, 4, integer=integer)


def figure_html(png: bytes, alt: str, caption: str, stem: str) -> str:
    b64 = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{b64}">'
            f'<figcaption>{caption} <span class="files">Files: <a href="figures/{esc(stem)}.svg">SVG</a>, '
            f'<a href="figures/{esc(stem)}.png">PNG</a></span></figcaption></figure>')


def files_html(names: list[str]) -> str:
    links = ", ".join(f'{esc(n)} (<a href="tables/{esc(n)}.csv">CSV</a>, <a href="tables/{esc(n)}.parquet">Parquet</a>)'
                      for n in names)
    return f'<p class="files">Tables: {links}</p>'


def missing_html(reason: str) -> str:
    return f'<p class="missing">Not available in this run: {esc(reason)}</p>'


def page(title: str, meta_html: str, nav: list[tuple[str, str]], sections: list[str], footer: str = "") -> str:
    toc = "".join(f'<li><a href="#{esc(i)}">{esc(t)}</a></li>' for i, t in nav)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><link rel=\"icon\" href=\"data:,\"><style>{CSS}</style></head><body>"
            f"<h1>{esc(title)}</h1>{meta_html}<nav><ol>{toc}</ol></nav>{''.join(sections)}{footer}</body></html>\n")


def section(sid: str, title: str, body: str) -> str:
    return f'<section id="{esc(sid)}"><h2>{esc(title)}</h2>{body}</section>'


def environment_footer(env: pd.DataFrame | None) -> str:
    """The footer: the machine the study ran on (the environment table: CPU, instruction set,
    library versions), or a note that it was not recorded."""
    if env is None or not len(env):
        return '<footer class="env"><p>Environment: not recorded for this run.</p></footer>'
    items = "; ".join(f"{esc(r.item)}: {esc(r.value)}" for r in env.itertuples())
    return ('<footer class="env"><p><b>Computed on</b> ' + items + '. The same study on another CPU or with another '
            'thread count can differ in the last digits (docs/report.md, "The footer").</p></footer>')
