"""The ranking stage's item-item source: EASE or item-kNN, whichever ranks the shop's validation items better."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from modeling.baselines import ItemKNN, interaction_matrix
from modeling.candidates import fit_sources, item_item_choice, source_config


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
    "knn" for any other count): noise shared by every model plus a little of each model's own (centred), so a
    paired difference has a spread of about 0.014 and a standard error of about 0.001."""
    rng = np.random.default_rng(0)
    shared = rng.normal(0.0, spread, shoppers)
    own = {name: rng.normal(0.0, 0.01, shoppers) for name in ("ease", "knn")}
    own = {name: values - values.mean() for name, values in own.items()}
    tried: list[int] = []

    def validate(model: Any) -> np.ndarray:
        if isinstance(model, ItemKNN):
            tried.append(model.neighbours)
            return gains.get(f"knn:{model.neighbours}", gains["knn"]) + shared + own["knn"]
        return gains["ease"] + shared + own["ease"]

    return validate, tried


def test_item_knn_replaces_ease_where_it_ranks_the_validation_items_clearly_better() -> None:
    users, items = _shop(0)
    validate, tried = _validation({"ease": 0.5, "knn": 0.4, "knn:39": 0.6})
    sources = fit_sources(users, items, 300, 40, validate=validate)
    assert sources.kind == "item_knn" and sources.l2 is None and sources.knn_neighbours == 39
    assert set(tried) == {20, 39}  # 50, 100 and 200 neighbours of 40 products are all 39
    want = ItemKNN(39).fit(interaction_matrix(users, items, 300, 40)).similarity
    np.testing.assert_allclose(sources.item_item.toarray(), want.toarray(), rtol=1e-6)
    assert item_item_choice(sources) == {"knn_neighbours": 39}
    assert source_config(sources)["item_item"] == "item_knn" and source_config(sources)["knn_neighbours"] == 39


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

    def one_shopper(model: Any) -> np.ndarray:  # no spread to measure: no evidence, however large the lead
        return np.array([0.9 if isinstance(model, ItemKNN) else 0.1])

    assert fit_sources(users, items, 300, 40, validate=one_shopper).kind == "ease"
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


def test_the_neighbour_grid_stops_at_what_a_product_can_have() -> None:
    users, items = np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 2, 0])
    validate, tried = _validation({"ease": 0.1, "knn": 0.1}, shoppers=3)
    fit_sources(users, items, 3, 3, validate=validate)
    assert set(tried) == {2}  # 20, 50, 100 and 200 neighbours of 3 products are all 2 (one value: not widened)


def test_a_refit_and_a_loaded_stage_keep_item_knn(tmp_path: Path) -> None:
    from modeling.features import ItemAttributes
    from modeling.reranker import Ranker, RankingStage

    users, items = _shop(4)
    sources = fit_sources(users, items, 300, 40, knn_neighbours=20)
    assert sources.kind == "item_knn" and sources.knn_neighbours == 20
    refit = fit_sources(users, items, 300, 40, **item_item_choice(sources))
    assert (refit.item_item != sources.item_item).nnz == 0
    attributes = ItemAttributes(np.array(["a"] * 40), np.array([""] * 40), np.ones(40, dtype=np.float32))
    RankingStage(sources, Ranker("feature", "item_item")).save(tmp_path / "stage", attributes)
    loaded = RankingStage.load(tmp_path / "stage").sources
    assert loaded.kind == "item_knn" and item_item_choice(loaded) == {"knn_neighbours": 20}
    assert (loaded.item_item.to_scipy() != sources.item_item).nnz == 0
    assert loaded.resized(45).knn_neighbours == 20
    meta = json.loads((tmp_path / "stage" / "stage.json").read_text())
    del meta["sources"]["knn_neighbours"]  # a stage published before the choice: item-kNN meant 200 neighbours
    (tmp_path / "stage" / "stage.json").write_text(json.dumps(meta))
    old = RankingStage.load(tmp_path / "stage").sources
    assert old.knn_neighbours is None and item_item_choice(old) == {"knn_neighbours": 200}
    ease = fit_sources(users, items, 300, 40, l2=50.0)
    assert ease.kind == "ease" and item_item_choice(ease) == {"l2": 50.0}
