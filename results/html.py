"""OUT/TASK/report.html: one self-contained page (images inlined, no scripts, nothing fetched) with the tables,
the plots and the data report."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import pandas as pd

from results.tables import best_rows, marks, number

__all__ = ["STYLE", "report_html"]

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; display: block; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f0f3f7; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.mark { background: #fff3cd; padding: 0.1em 0.4em; border-radius: 3px; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def _table(frame: pd.DataFrame) -> str:
    def cell(value: object) -> str:
        return html.escape(number(value))

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in frame.itertuples(False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _image(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    alt = html.escape(caption)
    return f'<figure><img src="data:image/png;base64,{data}" alt="{alt}"><figcaption>{alt}</figcaption></figure>'


def report_html(best: dict, tables: dict[str, pd.DataFrame], plots: dict[str, Path], data_report: dict) -> str:
    """The page: best configuration first, then each table and plot under its title, then the data report."""
    badge = "".join(f' <span class="mark">{m}</span>' for m in marks(best))
    rows = best_rows(best)
    # the values as they are (object column): _table formats them as best.md does, floats to four digits
    config = pd.DataFrame({"setting": [k for k, _ in rows], "value": pd.Series([v for _, v in rows], dtype=object)})
    parts = [
        f"<h1>Search report: {html.escape(best['task'])}{badge}</h1>",
        "<h2>Best configuration</h2>",
        _table(config),
        *(f"<h2>{html.escape(title)}</h2>{_table(frame)}" for title, frame in tables.items()),
        *(f"<h2>{html.escape(caption)}</h2>{_image(path, caption)}" for caption, path in plots.items()),
        "<h2>Data report</h2>",
        f"<pre>{html.escape(json.dumps(data_report, indent=2)[:200_000])}</pre>",
    ]
    title = html.escape(f"search: {best['task']}")
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n"
    )
