"""Self-contained HTML pages (`history --html`, `compare --format html`): one file, its style and
its one script inline, nothing fetched from the network, every shown text escaped.

A table made here is sortable by clicking a column head: each cell carries the value it sorts
by (`data-value`: a number where the cell shows one, else its text). The page sets
`data-ready="yes"` on its body when its script has run to the end; opened with `#selftest` it
sorts its first table by the column marked `data-selftest` and records the rows' new order in
the body's `data-sorted`, which the browser tests read.

Written here rather than with a templating library: two small pages do not need one, and a
page stays one string that a test can read.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:1em 0}th,td{padding:.25em .6em;border-bottom:1px solid #ddd}
th{cursor:pointer;text-align:left;background:#f4f4f4}th[aria-sort]::after{content:" \\2195"}
td.num{text-align:right;font-variant-numeric:tabular-nums}.down{color:#b00}.up{color:#070}
svg{background:#fafafa;border:1px solid #eee}figure{margin:1em 0}p.note{color:#555;max-width:60em}
.verdict{font-weight:600;padding:.5em;border-left:4px solid #070}.verdict.failed{border-color:#b00}
"""

SCRIPT = """
(function () {
  function key(cell) {
    var v = cell.getAttribute("data-value");
    var n = parseFloat(v);
    return isNaN(n) ? v : n;
  }
  function sortBy(table, column, descending) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[column]), y = key(b.cells[column]);
      if (typeof x !== typeof y) { x = String(x); y = String(y); }
      var order = x < y ? -1 : x > y ? 1 : 0;
      return descending ? -order : order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  var tables = document.querySelectorAll("table.sortable");
  tables.forEach(function (table) {
    table.querySelectorAll("th").forEach(function (th, column) {
      th.setAttribute("aria-sort", "none");
      th.addEventListener("click", function () {
        var descending = th.getAttribute("aria-sort") === "ascending";
        sortBy(table, column, descending);
        th.setAttribute("aria-sort", descending ? "descending" : "ascending");
      });
    });
  });
  if (location.hash === "#selftest" && tables.length) {
    var table = tables[0];
    var head = table.querySelector("th[data-selftest]");
    if (head) { head.click(); }
    var order = Array.prototype.map.call(table.tBodies[0].rows, function (r) {
      return r.getAttribute("data-unit");
    });
    document.body.setAttribute("data-sorted", order.join(","));
  }
  document.body.setAttribute("data-ready", "yes");
})();
"""


def escape(text: object) -> str:
    """`text` as HTML text or attribute value (quotes escaped too)."""
    return html.escape(str(text), quote=True)


_MARKDOWN_SYNTAX = re.compile(r"([\\`*_\[\]!])")


def markdown_text(text: object, *, free: bool = False) -> str:
    """Text for a Markdown report: HTML in it is shown, not rendered (GitHub renders raw HTML
    in Markdown), and in a table cell a `|` or a line break cannot end the cell or the row.
    `free`: text from outside (a commit subject, a branch, a failure's message), whose
    Markdown syntax (links, images, emphasis, code) is shown as written too."""
    flat = " ".join(str(text).splitlines())
    if free:
        flat = _MARKDOWN_SYNTAX.sub(r"\\\1", flat)
    return html.escape(flat, quote=False).replace("|", "\\|")


_FORMULA_START = ("=", "+", "-", "@", "\uff1d", "\uff0b", "\uff0d", "\uff20")
"""What makes a spreadsheet read a CSV cell as a formula (OWASP, CSV injection), full-width
forms included; leading white space is no shield (some importers trim it)."""


def spreadsheet_cell(value: object) -> object:
    """A CSV cell a spreadsheet shows as written: text that would start a formula (a commit
    subject `=HYPERLINK(...)`, say, or one after a space, a tab or a line break) gets a leading
    apostrophe; numbers and other values are left as they are."""
    if isinstance(value, str) and (
        value.startswith(("\t", "\r", "\n")) or value.lstrip().startswith(_FORMULA_START)
    ):
        return "'" + value
    return value


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def sort_value(shown: str) -> str:
    """What a cell showing `shown` sorts by: its first number (a typographic minus read as
    one), or its text where it shows none."""
    found = _NUMBER.search(shown.replace("\u2212", "-"))
    return found.group(0) if found else shown


@dataclass(frozen=True)
class Cell:
    """One table cell: the text shown, what it sorts by (default: `sort_value` of the text),
    a CSS class, a tooltip and, for a link, the anchor it points to."""

    text: str
    value: str | float | None = None
    css: str = ""
    title: str = ""
    link: str = ""

    def html(self) -> str:
        value = self.value if self.value is not None else sort_value(self.text)
        if isinstance(value, float):
            value = f"{value:.8g}" if math.isfinite(value) else ""
        attributes = f' data-value="{escape(value)}"'
        if self.css:
            attributes += f' class="{escape(self.css)}"'
        if self.title:
            attributes += f' title="{escape(self.title)}"'
        shown = escape(self.text)
        if self.link:
            shown = f'<a href="#{escape(self.link)}">{shown}</a>'
        return f"<td{attributes}>{shown}</td>"


def sortable_table(
    table_id: str,
    headers: Sequence[str],
    rows: Sequence[tuple[str, Sequence[Cell]]],
    *,
    selftest_column: int | None = None,
) -> str:
    """A sortable table: `rows` as (the row's key, written to `data-unit`; its cells)."""
    head = "".join(
        f"<th{' data-selftest' if n == selftest_column else ''}>{escape(name)}</th>"
        for n, name in enumerate(headers)
    )
    body = "".join(
        f'<tr data-unit="{escape(key)}">{"".join(cell.html() for cell in cells)}</tr>'
        for key, cells in rows
    )
    return (
        f'<table class="sortable" id="{escape(table_id)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def document(title: str, body: str) -> str:
    """A whole page: `body` (HTML already escaped) under an `h1` of `title`."""
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}'
        f'</title><meta name="viewport" content="width=device-width"><style>{STYLE}</style>'
        f"</head><body><h1>{escape(title)}</h1>{body}<script>{SCRIPT}</script></body></html>\n"
    )
