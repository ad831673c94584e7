"""A rich table that fits the terminal: it drops its least needed columns, and says which, rather
than squeezing every column to an ellipsis or to nothing.

Rich shrinks a table that is wider than the terminal column by column; once the columns are at
their narrowest it cuts them all in proportion, so at 80 columns `compare`'s per-task table
lost its score, Δ and p columns entirely (their cells rendered empty). A FittedTable knows
which columns a reader can do without (`keep` > 0, the highest dropped first) and measures
itself against the width it is given when it is printed: in a pipe (200 columns) or a wide
terminal it prints every column, exactly as a plain table would.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

Justify = Literal["left", "center", "right"]


def _chrome(columns: int) -> int:
    """What a table of this many columns spends besides its cells: one space of padding each
    side of a cell, and a border between and around the columns."""
    return 3 * columns + 1


_NARROWEST = 10
"""A name column folds down to no fewer characters per line than this."""


@dataclass(frozen=True)
class Column:
    """One column: its header, and how readily it is dropped when the table is too wide."""

    header: str
    keep: int = 0
    """0: always shown; columns with higher values are dropped first (then the rightmost)."""
    justify: Justify = "left"
    style: str | None = None
    no_wrap: bool = False
    """Cells never wrap (a name); other columns wrap their header and cells at spaces when
    the terminal is narrow, instead of being cut."""


class FittedTable:
    """Rows of strings under `columns`, rendered as a rich Table that fits the console."""

    def __init__(self, title: str, columns: Sequence[Column], caption: str | None = None) -> None:
        self.title, self.columns, self.caption = title, list(columns), caption
        self.rows: list[tuple[list[str], str]] = []

    def add_row(self, *cells: str, style: str = "") -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        self.rows.append((list(cells), style))

    def table(self, hidden: Iterable[int] = (), widths: dict[int, int] | None = None) -> Table:
        """The rich Table without the columns at the positions in `hidden`; a column in
        `widths` gets exactly that many characters, its cells wrapped (or, for a name longer
        than that, folded) onto more lines."""
        gone, widths = set(hidden), widths or {}
        shown = [i for i in range(len(self.columns)) if i not in gone]
        caption = self.caption
        named = [i for i in sorted(gone) if not self.empty(i)]  # an empty column says nothing
        if named:
            names = ", ".join(self.columns[i].header.replace("\n", " ") for i in named)
            note = f"not shown at this width: {names} (a wider terminal or --format markdown)"
            caption = f"{caption}\n{note}" if caption else note
        out = Table(title=self.title, caption=caption or None)
        for i in shown:
            column = self.columns[i]
            out.add_column(
                column.header,
                justify=column.justify,
                style=column.style,
                no_wrap=column.no_wrap and i not in widths,
                width=widths.get(i),
                overflow="fold" if i in widths else "ellipsis",
            )
        for cells, style in self.rows:
            out.add_row(*(cells[i] for i in shown), style=style)
        return out

    def drop_order(self) -> list[int]:
        """The droppable columns in the order they go: highest `keep` first, then the rightmost."""
        droppable = [i for i, column in enumerate(self.columns) if column.keep > 0]
        return sorted(droppable, key=lambda i: (-self.columns[i].keep, -i))

    def measure(self, position: int) -> tuple[int, int]:
        """(narrowest, natural) width of a column's text: its longest word, its longest line
        (the header's included; markup is not counted)."""
        texts = [self.columns[position].header, *(cells[position] for cells, _ in self.rows)]
        plain = [Text.from_markup(text).plain for text in texts]
        lines = [line for text in plain for line in text.splitlines()] or [""]
        words = [word for line in lines for word in line.split()] or [""]
        if self.columns[position].no_wrap:
            words = lines
        return max(cell_len(w) for w in words), max(cell_len(line) for line in lines)

    def empty(self, position: int) -> bool:
        """Whether a column holds nothing but blanks and dashes (no row has a value there)."""
        return all(cells[position].strip() in ("", "—") for cells, _ in self.rows)

    def widths(self, width: int) -> tuple[list[int], dict[int, int]]:
        """The columns to hide and the width of every shown column, for a table at most
        `width` characters wide ({} when it fits as it is)."""
        ranges = {i: self.measure(i) for i in range(len(self.columns))}

        def natural(shown: list[int]) -> int:
            return sum(ranges[i][1] for i in shown) + _chrome(len(shown))

        shown = list(ranges)
        if natural(shown) <= width:
            return [], {}

        # Too wide: first the columns with nothing in them (quietly: they say nothing), then
        # the spare ones in their order, until every column fits at its longest word.
        # The columns marked most needed (keep 1) go only when folding the names is not
        # enough either.
        def narrowest(shown: list[int], fold: bool) -> int:
            fold_to = {i: min(ranges[i][0], _NARROWEST) for i in shown if self.columns[i].no_wrap}
            floors = [fold_to[i] if fold and i in fold_to else ranges[i][0] for i in shown]
            return sum(floors) + _chrome(len(shown))

        hidden = [i for i in self.drop_order() if self.empty(i)]
        hidden += [i for i in self.drop_order() if i not in hidden]
        for count in range(len(hidden) + 1):
            shown = [i for i in ranges if i not in hidden[:count]]
            nxt = hidden[count] if count < len(hidden) else None
            fold = nxt is not None and self.columns[nxt].keep <= 1 and not self.empty(nxt)
            if narrowest(shown, fold) <= width:
                break
        hidden = hidden[:count]
        budget = width - _chrome(len(shown))
        if natural(shown) <= width:
            return hidden, {}
        # Every column starts at its natural width; the widest give way first, down to their
        # longest word; then, if it must, the longest names fold (never below _NARROWEST). A
        # number is never split: below that the table is wider than the terminal.
        sizes = {i: ranges[i][1] for i in shown}
        floors = {i: ranges[i][0] for i in shown}
        names = {
            i: min(floors[i], _NARROWEST) if self.columns[i].no_wrap else floors[i] for i in shown
        }
        for floor in (floors, names):
            while sum(sizes.values()) > budget:
                slack = [i for i in shown if sizes[i] > floor[i]]
                if not slack:
                    break
                sizes[max(slack, key=lambda i: (sizes[i], -i))] -= 1
        return hidden, sizes

    def fitted(self, width: int) -> Table:
        """The table as it fits in `width` characters: the fewest columns dropped that let every
        shown column keep its longest word; the others wrap at spaces. Where even that is too
        wide, one block of `column  value` lines per row."""
        hidden, sizes = self.widths(width)
        shown = len(self.columns) - len(hidden)
        if sizes and sum(sizes.values()) + _chrome(shown) > width:
            return self.records()
        return self.table(hidden, sizes)

    def records(self) -> Table:
        """Every row as lines of `column  value` (values wrap, nothing dropped), rows apart."""
        out = Table(title=self.title, caption=self.caption, show_header=False, box=None)
        out.add_column(style="bold", no_wrap=True)
        out.add_column(overflow="fold")
        for n, (cells, style) in enumerate(self.rows):
            if n:
                out.add_row("", "")
            for column, cell in zip(self.columns, cells, strict=True):
                if cell.strip() not in ("", "—"):
                    out.add_row(column.header.replace("\n", " ") or "mark", cell, style=style)
        return out

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.fitted(options.max_width)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.fitted(options.max_width))
