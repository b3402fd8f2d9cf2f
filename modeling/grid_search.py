"""One-parameter grid search on the validation items that widens its grid until the best value is inside it.

A baseline tuned on a grid whose best value is the grid's edge is under-tuned: a better value may lie
beyond it. :func:`widening_search` tries the grid, and while the best value is at an edge that may be
moved (not a hard bound), it tries one more value past that edge (a geometric step), at most
``max_extensions`` times. The log of every value tried goes into the evaluation output.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


@dataclass
class GridResult:
    """Outcome of :func:`widening_search`.

    Attributes:
        best: the value with the highest validation score (the first one on ties).
        score: its validation score.
        tried: every (value, score) in the order tried.
        widened: values added past the given grid's edges.
        at_edge: True when the best value is still at an open edge after the last extension.
    """

    best: float
    score: float
    tried: list[tuple[float, float]] = field(default_factory=list)
    widened: list[float] = field(default_factory=list)
    at_edge: bool = False

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"best": self.best, "score": self.score, "tried": [list(t) for t in self.tried],
                "widened": self.widened, "at_edge": self.at_edge}


def widening_search(evaluate: Callable[[float], float], grid: Sequence[float], *, lower: float | None = None,
                    upper: float | None = None, step: float | None = None, integer: bool = False,
                    max_extensions: int = 4, label: str = "grid value") -> GridResult:
    """Best value of one parameter on the validation items, the grid widened past an edge that wins.

    Args:
        evaluate: maps a parameter value to its validation score (higher is better).
        grid: values to try first (sorted here); a single value is taken as fixed (nothing widened).
        lower, upper: hard bounds; an edge at a bound is not widened.
        step: factor between a widened value and the edge (default: the ratio of the grid's two
            outermost values on that side, at least 2).
        integer: round widened values (e.g. numbers of factors or neighbours).
        max_extensions: most values added in all.
        label: what the parameter is, in the log line of each value tried (e.g. ``"EASE l2"``).

    Returns:
        The :class:`GridResult`.
    """
    values = sorted(set(float(v) for v in grid))
    if not values:
        raise ValueError("the grid is empty")
    tried: dict[float, float] = {}

    def run(value: float) -> float:
        if value not in tried:
            tried[value] = float(evaluate(value))
            logger.info("%s %g: validation %.4f", label, value, tried[value])
        return tried[value]

    for value in values:
        run(value)
    widened: list[float] = []

    def best_value() -> float:
        return max(tried, key=lambda v: (tried[v], -list(tried).index(v)))

    def next_value(edge: float, low_side: bool) -> float | None:
        ordered = sorted(tried)
        neighbour = ordered[1] if low_side else ordered[-2]
        ratio = step or max(2.0, (neighbour / edge if low_side else edge / neighbour) if edge > 0 and neighbour > 0
                            else 2.0)
        candidate = edge / ratio if low_side else edge * ratio
        if integer:
            candidate = float(max(1, round(candidate)))
        if (lower is not None and candidate < lower) or (upper is not None and candidate > upper):
            candidate = lower if low_side else upper
        if candidate is None or candidate in tried or edge <= 0:
            return None
        return candidate

    at_edge = False
    while len(values) > 1:
        best = best_value()
        ordered = sorted(tried)
        low_side = best == ordered[0]
        if not (low_side or best == ordered[-1]):
            at_edge = False
            break
        candidate = next_value(best, low_side)
        at_edge = candidate is not None
        if candidate is None or len(widened) >= max_extensions:
            break
        widened.append(candidate)
        run(candidate)
    best = best_value()
    return GridResult(best=best, score=tried[best], tried=list(tried.items()), widened=widened, at_edge=at_edge)
