"""The ranking stage's item-item source: EASE or item-kNN, whichever ranks the shop's validation items better."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from modeling.baselines import ItemKNN, interaction_matrix
from modeling.candidates import Sources, fit_sources, item_item_choice, source_config


def _shop(seed: int, n_users: int = 300, n_items: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Interactions sorted by user: each shopper's products drawn from one of four groups of ten."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for user in range(n_users):
        group = rng.integers(0, 4)
        chosen = rng.choice(10, rng.integers(2, 7), replace=False) + 10 * group
        users += [user] * len(chosen)
        items += chosen.tolist()
    return np.array(users), np.array(items) % n_items


def _validation(gains: dict[str, float], shoppers: int = 200, spread: float = 0.1):
    """A validation scorer whose per-shopper NDCG@10 has the given mean per model ("ease", or "knn:<neighbours>",
    "knn" for any other count) and the same noise for every model (so a paired difference has no spread)."""
    noise = np.random.default_rng(0).normal(0.0, spread, shoppers)
    tried: list[int] = []

    def validate(model: Any) -> np.ndarray:
        if isinstance(model, ItemKNN):
            tried.append(model.neighbours)
            return gains.get(f"knn:{model.neighbours}", gains["knn"]) + noise
        return gains["ease"] + noise

    return validate, tried


def test_item_knn_replaces_ease_where_it_ranks_the_validation_items_clearly_better() -> None:
    users, items = _shop(0)
    validate, tried = _validation({"ease": 0.5, "knn": 0.4, "knn:50": 0.6})
    sources = fit_sources(users, items, 300, 40, validate=validate)
    assert sources.kind == "item_knn" and sources.l2 is None and sources.knn_neighbours == 50
    assert {20, 50, 100, 200} <= set(tried)
    want = ItemKNN(50).fit(interaction_matrix(users, items, 300, 40)).similarity
    np.testing.assert_allclose(sources.item_item.toarray(), want.toarray(), rtol=1e-6)
    assert item_item_choice(sources) == {"knn_neighbours": 50}
    assert source_config(sources)["item_item"] == "item_knn" and source_config(sources)["knn_neighbours"] == 50


def test_ease_stays_where_item_knn_leads_by_less_than_two_standard_errors() -> None:
    users, items = _shop(1)
    shoppers = 200
    rng = np.random.default_rng(1)
    ease_scores = rng.random(shoppers)
    noise = rng.normal(0.0, 0.2, shoppers)
    knn_scores = ease_scores + 0.01 + noise - noise.mean()  # 0.01 ahead, one standard error about 0.014

    def validate(model: Any) -> np.ndarray:
        return knn_scores if isinstance(model, ItemKNN) else ease_scores

    assert knn_scores.mean() > ease_scores.mean()
    sources = fit_sources(users, items, 300, 40, validate=validate)
    assert sources.kind == "ease" and sources.l2 is not None and sources.knn_neighbours is None
    assert item_item_choice(sources) == {"l2": sources.l2}
    tie, _ = _validation({"ease": 0.5, "knn": 0.5})
    assert fit_sources(users, items, 300, 40, validate=tie).kind == "ease"
    fixed = fit_sources(users, items, 300, 40, l2=sources.l2)  # no validation: EASE as before
    assert fixed.kind == "ease" and (fixed.item_item != sources.item_item).nnz == 0


def test_the_choice_follows_real_validation_scores() -> None:
    users, items = _shop(2, n_users=400)
    matrix = interaction_matrix(users, items, 400, 40)
    val_users = np.arange(300, 400)  # each validation shopper's last product, ranked from the others
    held = np.array([items[users == u][-1] for u in val_users])
    rows = matrix[val_users].toarray()
    rows[np.arange(len(val_users)), held] = 0.0
    seen: dict[str, np.ndarray] = {}

    def validate(model: Any) -> np.ndarray:
        scores = np.asarray(model.score(rows), dtype=np.float64)
        scores[rows > 0] = -np.inf
        ranks = (scores > scores[np.arange(len(held)), held][:, None]).sum(axis=1)
        gains = np.where(ranks < 10, 1.0 / np.log2(ranks + 2), 0.0)
        name = "knn" if isinstance(model, ItemKNN) else "ease"
        if name not in seen or gains.mean() > seen[name].mean():
            seen[name] = gains
        return gains

    sources = fit_sources(users, items, 400, 40, validate=validate)
    difference = seen["knn"] - seen["ease"]
    clear = difference.mean() > 2.0 * difference.std(ddof=1) / np.sqrt(len(difference))
    assert sources.kind == ("item_knn" if clear else "ease")


def test_a_refit_and_a_loaded_stage_keep_item_knn(tmp_path: Path) -> None:
    users, items = _shop(4)
    sources = fit_sources(users, items, 300, 40, knn_neighbours=20)
    assert sources.kind == "item_knn" and sources.knn_neighbours == 20
    refit = fit_sources(users, items, 300, 40, **item_item_choice(sources))
    assert (refit.item_item != sources.item_item).nnz == 0
    sources.save(tmp_path)
    (tmp_path / "stage.json").write_text(json.dumps({"sources": source_config(sources)}))
    config = json.loads((tmp_path / "stage.json").read_text())["sources"]
    loaded = Sources.load(tmp_path, config["item_item"], config["l2"], knn_neighbours=config["knn_neighbours"])
    assert loaded.kind == "item_knn" and loaded.knn_neighbours == 20
    assert item_item_choice(loaded) == {"knn_neighbours": 20}
    assert loaded.resized(45).knn_neighbours == 20
    ease = fit_sources(users, items, 300, 40, l2=50.0)
    assert ease.kind == "ease" and item_item_choice(ease) == {"l2": 50.0}
