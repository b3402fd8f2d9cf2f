"""Server-side charts for the staff dashboard: matplotlib figures rendered as inline SVG.

Rendered in the web process with matplotlib's object-oriented API (``Figure``, no pyplot state, so
threads do not share a current figure) and embedded in the page: no JavaScript, no CDN, no extra request.
matplotlib is imported on the first chart only (the API's requests never load it).
"""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

logger = logging.getLogger(__name__)

WIDTH, HEIGHT = 7.0, 2.6  # inches
STYLE = {"svg.fonttype": "none",  # text kept as text: smaller, selectable, searchable
         "font.size": 8, "text.parse_math": False}  # a "$" in an arm's or a strategy's name is just a character


def _styled(chart: Callable[..., str]) -> Callable[..., str]:
    """Draw the whole chart under :data:`STYLE` (rc settings apply when artists are made, not only when saved)."""

    @functools.wraps(chart)
    def draw(*args: Any, **kwargs: Any) -> str:
        import matplotlib

        with matplotlib.rc_context(STYLE):
            return chart(*args, **kwargs)

    return draw


def _label(name: str) -> str:
    """A legend label: matplotlib leaves out labels that start with "_"."""
    return name if name and not name.startswith("_") else f" {name or '(none)'}"


def _figure() -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH, HEIGHT), layout="constrained")
    return figure, figure.add_subplot()


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # without the XML prologue and doctype: embedded in the page


def _empty(message: str) -> str:
    return f'<p class="help">{message}</p>'


@_styled
def lines(days: Sequence[date], values: dict[str, Sequence[float | None]], *, ylabel: str,
          percent: bool = False, empty: str = "No data yet.") -> str:
    """One line per group over the days (None: a gap)."""
    if not days or not values:
        return _empty(empty)
    figure, axes = _figure()
    for group, series in values.items():
        axes.plot(days, [float("nan") if v is None else (100 * v if percent else v) for v in series], marker=".",
                  label=_label(group))
    axes.set_ylabel(ylabel + (" (%)" if percent else ""))
    axes.legend(loc="upper left", fontsize=7, ncols=min(4, len(values)))
    axes.grid(alpha=0.3)
    _date_axis(axes, days)
    figure.autofmt_xdate()
    return _svg(figure)


@_styled
def stacked_bars(days: Sequence[date], values: dict[str, Sequence[float | None]], *, ylabel: str,
                 empty: str = "No data yet.") -> str:
    """Bars per day, one stacked segment per group."""
    if not days or not values:
        return _empty(empty)
    figure, axes = _figure()
    bottom = [0.0] * len(days)
    for group, series in values.items():
        heights = [v or 0.0 for v in series]
        axes.bar(days, heights, bottom=bottom, label=_label(group), width=0.8)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    axes.set_ylabel(ylabel)
    axes.legend(loc="upper left", fontsize=7, ncols=min(4, len(values)))
    axes.grid(alpha=0.3, axis="y")
    _date_axis(axes, days)
    figure.autofmt_xdate()
    return _svg(figure)


def _date_axis(axes: Any, days: Sequence[date]) -> None:
    """The whole window on the x axis (half a day either side), however few days hold values."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num

    axes.set_xlim(date2num(days[0]) - 0.5, date2num(days[-1]) + 0.5)
    locator = AutoDateLocator(maxticks=10)
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))


@_styled
def versions(labels: Sequence[str], values: dict[str, Sequence[float | None]], *, ylabel: str,
             empty: str = "No model version yet.") -> str:
    """A metric per model version (x: the versions, oldest first), one line per model."""
    if not labels:
        return _empty(empty)
    figure, axes = _figure()
    positions = list(range(len(labels)))
    for model, series in values.items():
        points = [(x, v) for x, v in zip(positions, series, strict=True) if v is not None]
        if points:
            axes.plot([x for x, _ in points], [v for _, v in points], marker="o", label=_label(model))
    axes.set_xticks(positions, labels, rotation=30, ha="right", fontsize=6)
    axes.set_ylabel(ylabel)
    axes.legend(loc="upper left", fontsize=7)
    axes.grid(alpha=0.3)
    return _svg(figure)


@_styled
def latency(bounds: Sequence[float], counts: Sequence[float], *, empty: str = "No request since the server started."
            ) -> str:
    """Requests per latency bucket (labels: the buckets' upper bounds)."""
    if not counts or sum(counts) == 0:
        return _empty(empty)
    figure, axes = _figure()
    labels = ["> " + _ms(bounds[-2]) if b == float("inf") else "≤ " + _ms(b) for b in bounds]
    axes.bar(range(len(counts)), counts)
    axes.set_xticks(range(len(counts)), labels, rotation=30, ha="right")
    axes.set_ylabel("requests")
    axes.grid(alpha=0.3, axis="y")
    return _svg(figure)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:g} ms"


@_styled
def long_tail(shows: Sequence[int], catalogue: int, *, empty: str = "No list shown yet.") -> str:
    """How often each product was shown, most shown first, against the catalogue's size (the long tail)."""
    if not shows:
        return _empty(empty)
    figure, axes = _figure()
    axes.bar(range(1, len(shows) + 1), shows, width=1.0)
    if catalogue:
        axes.axvline(catalogue, color="grey", linestyle="--", label=f"available products ({catalogue:,})")
        axes.legend(loc="upper right", fontsize=7)
    axes.set_xlabel("products, most shown first")
    axes.set_ylabel("times shown")
    axes.grid(alpha=0.3, axis="y")
    return _svg(figure)
