"""Charts and PDF pages for the console and the audit reports, with matplotlib and no system libraries.

Figures are built with `matplotlib.figure.Figure` directly, never pyplot, so
there is no global figure state to leak between requests or threads. SVG
output keeps text as text (`svg.fonttype: none`: small, searchable) and both
SVG and PDF are written without dates and with a fixed hash salt, so the same
data gives byte-identical files: a report's sha256 then depends only on what
it says. Math-text parsing is off, because token texts are data and may
hold `$`.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date

import matplotlib
import matplotlib.ticker
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": "protoken",
    "text.parse_math": False,
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
}
A4_PORTRAIT = (8.27, 11.69)
STATUS_COLOURS = {"done": "#59a14f", "failed": "#e15759", "running": "#4e79a7", "queued": "#bab0ac"}


@contextmanager
def style() -> Iterator[None]:
    with matplotlib.rc_context(RC), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        yield


def to_svg(fig: Figure) -> str:
    """The figure as an inline `<svg>` element (no XML prolog)."""
    buf = io.StringIO()
    with style():
        fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg") :]


def chart(draw, *args, height: float = 2.8, **kwargs) -> Figure:
    """A standalone figure (for SVG) with one axes drawn by `draw(ax, *args, **kwargs)`."""
    with style():
        fig = Figure(figsize=(6.5, height))
        draw(fig.add_subplot(), *args, **kwargs)
    return fig


def shares_height(rows: Sequence[dict]) -> float:
    return 0.32 * max(len(rows), 3) + 0.9


def draw_shares(ax, rows: Sequence[dict], colours: dict[str, str], *, title: str = "Mean share per client") -> None:
    """Horizontal bars of each client's mean sequence share; rows have client_id, mean_share."""
    ids = [r["client_id"] for r in rows][::-1]
    values = [r["mean_share"] for r in rows][::-1]
    bars = ax.barh(ids, values, color=[colours.get(c, "#888888") for c in ids])
    ax.bar_label(bars, labels=[f"{v:.1%}" for v in values], padding=3, fontsize=8)
    ax.set_xlim(0, max([*values, 0.01]) * 1.18)
    ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))
    ax.set_title(title, loc="left")


def draw_generations(ax, days: Sequence[dict], *, title: str = "Generations per day") -> None:
    """Stacked bars per day by status; rows have day and one count per status."""
    x = list(range(len(days)))
    bottom = [0] * len(days)
    for status, colour in STATUS_COLOURS.items():
        counts = [d.get(status, 0) for d in days]
        if any(counts):
            ax.bar(x, counts, bottom=bottom, color=colour, label=status, width=0.8)
            bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    _day_ticks(ax, [d["day"] for d in days])
    ax.yaxis.get_major_locator().set_params(integer=True)
    if any(bottom):
        ax.legend(frameon=False, ncols=4, loc="upper left", fontsize=8)
    ax.set_title(title, loc="left")


def draw_share_over_time(ax, series: dict[str, list[tuple[date, float]]], colours: dict[str, str],
                         days: list[date], *, title: str = "Mean share per day") -> None:
    """One line per client: its mean share on each day it had attributed generations."""
    index = {d: i for i, d in enumerate(days)}
    for client_id, points in series.items():
        xs = [index[d] for d, _ in points]
        ax.plot(xs, [s for _, s in points], marker="o", markersize=3, linewidth=1.4,
                color=colours.get(client_id, "#888888"), label=client_id)
    _day_ticks(ax, days)
    ax.set_ylim(0, 1.05)
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))
    if series:
        ax.legend(frameon=False, fontsize=7, ncols=min(len(series), 5), loc="upper left")
    ax.set_title(title, loc="left")


def _day_ticks(ax, days: Sequence[date]) -> None:
    step = max(1, len(days) // 10)  # at most ~10 labels, whatever the period length
    ticks = list(range(0, len(days), step))
    ax.set_xticks(ticks, [days[i].strftime("%d %b") for i in ticks])
    ax.set_xlim(-0.6, len(days) - 0.4)


class PdfDocument:
    """A PDF written page by page with `PdfPages`: chart pages, text pages and table pages on A4."""

    def __init__(self, *, title: str, subject: str) -> None:
        self.buffer = io.BytesIO()
        self._pdf = PdfPages(self.buffer, metadata={"Title": title, "Subject": subject, "Creator": "ProToken console",
                                                   "CreationDate": None})
        self.pages = 0

    def add_figure(self, fig: Figure) -> None:
        with style():
            self._pdf.savefig(fig)
        self.pages += 1

    def add_text_page(self, heading: str, lines: Sequence[str], *, charts: Sequence[tuple] = ()) -> None:
        """A page with a heading, lines of text, and charts below it.

        `charts` are ``(draw, args, kwargs, height_inches)``: each gets its own axes, drawn as vectors.
        """
        with style():
            fig = Figure(figsize=A4_PORTRAIT)
            fig.text(0.07, 0.95, heading, fontsize=15, fontweight="bold", va="top")
            for i, line in enumerate(lines):
                fig.text(0.07, 0.91 - i * 0.021, line, fontsize=9.5, va="top")
            top = 0.88 - len(lines) * 0.021
            for draw, args, kwargs, height in charts:
                frac = height / A4_PORTRAIT[1]
                ax = fig.add_axes((0.2, top - frac + 0.03, 0.72, frac - 0.06))
                draw(ax, *args, **kwargs)
                top -= frac
        self.add_figure(fig)

    def add_table_pages(self, heading: str, columns: Sequence[str], rows: Sequence[Sequence[str]],
                        *, rows_per_page: int = 32, empty: str = "Nothing to show.") -> None:
        chunks = [rows[i : i + rows_per_page] for i in range(0, len(rows), rows_per_page)] or [[]]
        for n, chunk in enumerate(chunks):
            suffix = f" ({n + 1}/{len(chunks)})" if len(chunks) > 1 else ""
            self.add_figure(_table_page(heading + suffix, columns, chunk, empty))

    def close(self) -> bytes:
        self._pdf.close()
        return self.buffer.getvalue()


def _table_page(heading: str, columns: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> Figure:
    with style():
        fig = Figure(figsize=A4_PORTRAIT)
        fig.text(0.07, 0.95, heading, fontsize=15, fontweight="bold", va="top")
        if not rows:
            fig.text(0.07, 0.90, empty, fontsize=10, va="top")
            return fig
        ax = fig.add_axes((0.07, 0.05, 0.86, 0.86))
        ax.set_axis_off()
        table = ax.table(cellText=[list(r) for r in rows], colLabels=list(columns), loc="upper left", cellLoc="left")
        table.auto_set_font_size(False)
        table.set_fontsize(8)
        table.scale(1, 1.35)
        for (row, _col), cell in table.get_celld().items():
            cell.set_edgecolor("#d0d4da")
            if row == 0:
                cell.set_facecolor("#eef1f5")
                cell.get_text().set_fontweight("bold")
    return fig
