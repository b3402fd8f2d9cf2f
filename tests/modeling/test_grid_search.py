"""The validation grid search that widens its grid past a winning edge."""

from __future__ import annotations

import pytest

from modeling.grid_search import widening_search


def test_a_best_value_inside_the_grid_adds_nothing() -> None:
    result = widening_search(lambda x: -abs(x - 200), [10, 50, 200, 500, 1000])
    assert result.best == 200 and result.widened == [] and not result.at_edge
    assert [value for value, _ in result.tried] == [10, 50, 200, 500, 1000]


def test_a_winning_upper_edge_is_widened_until_the_best_is_inside() -> None:
    # The old EASE grid stopped at 1000; here the optimum is 5000.
    result = widening_search(lambda x: -abs(x - 5000), [10, 50, 200, 500, 1000])
    assert result.widened == [2000.0, 4000.0, 8000.0]
    assert result.best == 4000.0 and not result.at_edge


def test_a_winning_lower_edge_is_widened_downwards_and_the_limit_is_reported() -> None:
    result = widening_search(lambda x: -x, [1, 10, 100], max_extensions=2)
    assert result.widened == [0.1, 0.01]
    assert result.best == 0.01 and result.at_edge


def test_hard_bounds_and_fixed_values_are_not_widened() -> None:
    assert widening_search(lambda w: w, [0.0, 0.5, 1.0], lower=0.0, upper=1.0).widened == []
    fixed = widening_search(lambda x: x, [7.0])
    assert (fixed.best, fixed.widened, fixed.at_edge) == (7.0, [], False)


def test_integer_parameters_stay_integers_and_ties_keep_the_first_value() -> None:
    result = widening_search(lambda n: -abs(n - 30), [32, 64, 128], integer=True, lower=1)
    assert result.widened == [16.0] and result.best == 32.0
    assert widening_search(lambda x: 1.0, [3, 1, 2]).best == 1.0


def test_an_empty_grid_is_refused() -> None:
    with pytest.raises(ValueError):
        widening_search(lambda x: x, [])
