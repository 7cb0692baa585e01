"""Small HTML helpers for reports. Every piece of data passes through :func:`esc`.

Prompts are untrusted text: nothing from a prompt, a model name or a file is put into markup
without escaping (``&``, ``<``, ``>``, ``"`` and ``'`` become entities), so a prompt such as
``<script>alert(1)</script>`` shows as text and never runs. Data handed to page scripts goes
through :func:`json_for_script`, which also escapes ``<``, ``>`` and ``&`` so that no
``</script>`` can end the block early.
"""

from __future__ import annotations

import html
import json
from typing import Any, Sequence

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.2em;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.4em}th,td{border:1px solid #ccc;padding:.25em .6em;font-size:.9em}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:grid;gap:.6em}.cell{font-size:.8em}.cell img{display:block;width:100%;height:auto}
.prompt{font-size:.85em;color:#333;max-width:60em}h2{margin-top:1.2em}
"""


def esc(value: Any) -> str:
    """HTML-escaped text of ``value`` (quotes included, so it is safe inside attributes too)."""
    return html.escape(str(value), quote=True)


def json_for_script(data: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">`` (no ``<``, ``>``, ``&`` left)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.{digits}f}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 4) -> str:
    """A ``<table>``; numbers are right-aligned and formatted with ``digits`` decimals."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(f'<td class="num">{esc(fmt(v, digits))}</td>' if isinstance(v, (int, float)) and
                        not isinstance(v, bool) else f"<td>{esc(v)}</td>" for v in row)
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def page(title: str, body: str) -> str:
    """A complete, self-contained HTML document (no external resources)."""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{STYLE}</style></head>'
            f"<body><h1>{esc(title)}</h1>{body}</body></html>")
