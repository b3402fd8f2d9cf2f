"""The time-budgeted two-tower search keeps to its budget."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

import modeling.train
from modeling import datasets as ds
from modeling.splits import Split
from modeling.tuning import budgeted_search
from modeling.two_tower import TwoTowerParams


def _fake_training(calls: list[dict[str, Any]], seconds: list[float]) -> Any:
    """A stand-in for ``train_model`` that takes ``seconds[n]`` for trial n unless its deadline comes first."""

    def train(data: Any, embeddings: Any, params: TwoTowerParams, *, deadline: float | None = None,
              **_: Any) -> Any:
        n = len(calls)
        calls.append({"deadline": deadline, "started": time.time()})
        wanted = seconds[min(n, len(seconds) - 1)]
        until = time.time() + wanted
        cut = False
        while time.time() < until:  # epochs of 0.05 s, as fit_epochs checks the deadline after each
            time.sleep(0.05)
            if deadline is not None and time.time() >= deadline and time.time() < until:
                cut = True
                break
        score = 0.1 + 0.01 * n
        return SimpleNamespace(history=[{"val_ndcg@10": score, "val_hr@10": score}], best_epoch=1,
                               deadline_reached=cut, search=None)

    return train


@pytest.fixture
def fake_training(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(modeling.train, "add_ranking_stage", lambda *args, **kwargs: None)
    return calls


def _search(budget: float) -> Any:
    empty = ds.CanonicalData(items=None, users=None, interactions=None, fingerprint="x")  # type: ignore[arg-type]
    return budgeted_search(empty, None, budget_seconds=budget, split=Split(None, None, None))  # type: ignore[arg-type]


def test_a_slower_later_trial_is_stopped_when_the_budget_is_spent(
        fake_training: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    # The first trial takes 0.3 s, so a second one starts within the 1.2 s budget; it would take 30 s.
    monkeypatch.setattr(modeling.train, "train_model", _fake_training(fake_training, [0.3, 30.0]))
    started = time.time()
    result = _search(1.2)
    took = time.time() - started
    trials = result.search["trials"]
    assert fake_training[0]["deadline"] is None  # the given parameters always train to their end
    assert fake_training[1]["deadline"] == pytest.approx(started + 1.2, abs=0.5)
    assert len(trials) == 2 and trials[1]["cut"] is True and "cut" not in trials[0]
    assert took < 10, took  # not the 30 s the second trial wanted
    assert result.search["best_trial"] == 1  # a cut trial still competes with its best epoch


def test_the_first_trial_runs_to_its_end_and_no_other_starts_without_time_for_it(
        fake_training: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(modeling.train, "train_model", _fake_training(fake_training, [0.6, 0.1]))
    result = _search(0.2)
    assert len(fake_training) == 1 and result.search["trials"][0]["seconds"] >= 0.5
    assert "cut" not in result.search["trials"][0]
