"""A report :class:`~fmbench.document.Document` as one self-contained HTML page: styled (inline
CSS, no external fonts or scripts), a table of contents, the run and machine, captioned tables in
horizontally scrolling blocks (the page itself never scrolls sideways), figures embedded as PNG
data. Every text from the results is escaped."""

from __future__ import annotations

import base64
import html
import re

import pandas as pd

from fmbench.document import (
    FAILED_TITLE,
    MACHINE_TITLE,
    NO_VALUES,
    SET_ASIDE_INTRO,
    SET_ASIDE_TITLE,
    TIME_CAPTION,
    TIME_TITLE,
    TITLE,
    Document,
    seconds,
    split_bold,
    text,
)
from fmbench.figures import Figure

CSS = """
:root{--fg:#1b1f24;--muted:#57606a;--line:#d0d7de;--head:#f6f8fa;--accent:#0550ae}
*{box-sizing:border-box}
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 color:var(--fg);max-width:1180px;margin:0 auto;padding:24px 28px 64px}
h1{font-size:1.75em;margin:0 0 .3em}
h2{font-size:1.3em;border-bottom:1px solid var(--line);padding-bottom:.25em;margin-top:2.2em}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
nav.toc{background:var(--head);border:1px solid var(--line);border-radius:6px;
 padding:10px 20px;margin:16px 0}
nav.toc h2{border:0;margin:0;font-size:1em}nav.toc ol{margin:6px 0;padding-left:22px}
.note,.caption,figcaption{color:var(--muted);font-size:13.5px}
.caption{margin:.2em 0 .6em}
.scroll{overflow-x:auto;max-width:100%;width:fit-content;margin:6px 0 14px;
 border:1px solid var(--line);border-radius:6px}
table{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}
.scroll table{border:0}
th,td{border:1px solid var(--line);padding:4px 9px;text-align:right;white-space:nowrap}
.scroll tr>*:first-child{border-left:0}.scroll tr>*:last-child{border-right:0}
.scroll tr:first-child>*{border-top:0}.scroll tr:last-child>*{border-bottom:0}
thead th{background:var(--head);font-weight:600;position:sticky;top:0}
td.label,th.label{text-align:left}
tbody tr:nth-child(even){background:#fafbfc}
td b{color:#000}
table.kv td{text-align:left;white-space:normal}table.kv td:first-child{color:var(--muted);
 white-space:nowrap}
figure{margin:22px 0}
figure img{max-width:100%;height:auto;border:1px solid var(--line);border-radius:4px}
figcaption{max-width:60em;margin-top:4px}
figure.grid img{width:min(100%,384px);image-rendering:pixelated}
ul.problems li{font-family:ui-monospace,monospace;font-size:12.5px}
@media print{nav.toc{display:none}thead th{position:static}}
"""


def _anchor(title: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"
    a, i = base, 2
    while a in used:
        a, i = f"{base}-{i}", i + 1
    used.add(a)
    return a


def _table(t: pd.DataFrame, ranked: bool) -> str:
    """A table: row labels left-aligned, values right-aligned, every cell escaped, best values
    (ranked tables only) in <b>."""
    n_index = t.index.nlevels
    t = t.reset_index()
    head = "".join(f"<th class='label'>{html.escape(str(c))}</th>" if i < n_index
                   else f"<th>{html.escape(str(c))}</th>" for i, c in enumerate(t.columns))
    rows = []
    for row in t.itertuples(index=False):
        cells = []
        for i, v in enumerate(row):
            s, bold = split_bold(v, ranked and i >= n_index)
            s = f"<b>{html.escape(s)}</b>" if bold else html.escape(s)
            cells.append(f"<td class='label'>{s}</td>" if i < n_index else f"<td>{s}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _kv(items: dict[str, object]) -> str:
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(text(v))}</td></tr>"
                   for k, v in items.items())
    return f"<table class='kv'><tbody>{rows}</tbody></table>"


def _figure(f: Figure, anchor: str) -> str:
    data = base64.b64encode(f.path.read_bytes()).decode()
    return (f"<figure id='{anchor}' class='{html.escape(f.kind)}'>"
            f"<img src='data:image/png;base64,{data}' alt='{html.escape(f.path.stem)}'>"
            f"<figcaption>{html.escape(f.caption)}</figcaption></figure>")


def _time_table(doc: Document) -> str:
    rows = "".join(f"<tr><td class='label'>{html.escape(k)}</td><td>{seconds(s)}</td>"
                   f"<td>{share:.1%}</td></tr>" for k, s, share in doc.time_split)
    head = "<tr><th class='label'>stage</th><th>seconds</th><th>share</th></tr>"
    return (f"<p class='caption'>{html.escape(TIME_CAPTION)}</p><div class='scroll'><table>"
            f"<thead>{head}</thead><tbody>{rows}</tbody></table></div>")


def _sections(doc: Document, used: set[str]) -> list[tuple[str, str, str]]:
    """(anchor, title, body) of every section, in page order."""
    out = [(_anchor("Run", used), "Run", _kv(doc.header)
            + "".join(f"<p class='note'>{html.escape(line)}</p>" for line in doc.reading))]
    if not doc.has_values:
        out[0] = (*out[0][:2], out[0][2] + f"<p><b>{html.escape(NO_VALUES)}</b></p>")
    for title, t in doc.tables.items():
        out.append((_anchor(title, used), title,
                    f"<p class='caption'>{html.escape(doc.captions[title])}</p>"
                    f"<div class='scroll'>{_table(t, ranked=title != FAILED_TITLE)}</div>"))
    if doc.figures:
        out.append((_anchor("Figures", used), "Figures",
                    "".join(_figure(f, _anchor("fig " + f.path.stem, used))
                            for f in doc.figures)))
    if doc.machine:
        out.append((_anchor(MACHINE_TITLE, used), MACHINE_TITLE, _kv(doc.machine)))
    if doc.time_split:
        out.append((_anchor(TIME_TITLE, used), TIME_TITLE, _time_table(doc)))
    if doc.problems:
        out.append((_anchor(SET_ASIDE_TITLE, used), SET_ASIDE_TITLE,
                    f"<p>{html.escape(SET_ASIDE_INTRO)}</p><ul class='problems'>"
                    + "".join(f"<li>{html.escape(p)}</li>" for p in doc.problems) + "</ul>"))
    return out


def render(doc: Document) -> str:
    """The page: title, table of contents, then the sections."""
    suite = html.escape(doc.suite)
    sections = _sections(doc, set())
    toc = "".join(f"<li><a href='#{a}'>{html.escape(t)}</a></li>" for a, t, _ in sections)
    body = "".join(f"<section id='{a}'><h2>{html.escape(t)}</h2>{b}</section>"
                   for a, t, b in sections)
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(TITLE)}{suite}</title><style>{CSS}</style></head><body>"
            f"<h1>{html.escape(TITLE)}{suite}</h1>"
            f"<nav class='toc'><h2>Contents</h2><ol>{toc}</ol></nav>{body}</body></html>")
