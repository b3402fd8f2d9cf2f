"""Baselines on tiny matrices whose answer is known, and the comparison harness."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from modeling.baselines import (
    BASELINES,
    EASE,
    EASEGram,
    ImplicitALS,
    ItemKNN,
    Popularity,
    Transitions,
    TransitionsEASE,
    fit_baseline,
    fit_baselines,
    interaction_matrix,
    last_items,
    transition_counts,
)
from modeling.embeddings import load_embeddings
from modeling.evaluate import compare_leave_last_out, format_differences, format_table
from modeling.sources import load_source
from modeling.two_tower import TwoTowerParams
from tests.conftest import Pipeline


def two_groups() -> tuple:
    """Users 0-5 like items 0-2, users 6-11 like items 3-5; every user has all items of their group."""
    users, items = [], []
    for user in range(12):
        group = range(0, 3) if user < 6 else range(3, 6)
        for item in group:
            users.append(user)
            items.append(item)
    return interaction_matrix(np.array(users), np.array(items), 12, 6)


@pytest.mark.parametrize("model", [ItemKNN(neighbours=0), ItemKNN(neighbours=2), EASE(l2=1.0),
                                   ImplicitALS(factors=4, regularization=0.01, iterations=30)])
def test_withheld_item_of_the_users_group_ranks_first(model) -> None:
    model.fit(two_groups())
    history = interaction_matrix(np.array([0, 0]), np.array([0, 1]), 1, 6)  # misses item 2
    scores = model.score(history)[0]
    scores[[0, 1]] = -np.inf
    assert int(np.argmax(scores)) == 2
    other = interaction_matrix(np.array([0]), np.array([4]), 1, 6)
    assert set(np.argsort(-model.score(other)[0])[:3]) >= {3, 5}


def test_item_knn_similarity_is_cosine_without_self() -> None:
    matrix = interaction_matrix(np.array([0, 0, 1]), np.array([0, 1, 0]), 2, 2)
    knn = ItemKNN(neighbours=0).fit(matrix)
    # item 0: users {0, 1}; item 1: user {0}; cosine = 1 / sqrt(2 * 1)
    assert knn.similarity[0, 1] == pytest.approx(1 / np.sqrt(2))
    assert knn.similarity[0, 0] == 0.0


def test_ease_diagonal_is_zero_and_popularity_counts() -> None:
    matrix = two_groups()
    assert np.allclose(np.diag(EASE(10.0).fit(matrix).weights), 0.0)
    assert Popularity().fit(matrix).scores.tolist() == [6.0] * 6
    repeated = interaction_matrix(np.array([0, 0]), np.array([1, 1]), 1, 2)
    assert repeated.toarray().tolist() == [[0.0, 1.0]]


@pytest.fixture(scope="module")
def mid_shop(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """A demo shop big enough for the models to be told apart: 400 shoppers, 300 products, 6,000 reviews."""
    from modeling.embeddings import build_embeddings
    from modeling.synthetic import DemoParams, generate_demo_data

    path = tmp_path_factory.mktemp("mid_shop")
    generate_demo_data(path / "raw", DemoParams(n_users=400, n_items=300, n_interactions=6000, seed=7), progress=False)
    data = load_source("amazon2018", path / "raw")
    build_embeddings(data, path / "emb", progress=False)
    return data, load_embeddings(path / "emb")


def test_comparison_reports_every_model_on_one_split(mid_shop: tuple) -> None:
    data, embeddings = mid_shop
    messages: list[str] = []
    result = compare_leave_last_out(data, embeddings, TwoTowerParams(epochs=2, batch_size=128),
                                    ease_l2_grid=(10.0, 100.0), on_progress=messages.append)
    names = {"popularity", "item_knn", "ease", "ials", "transitions", "transitions+ease", "sequential_rules"}
    assert set(result["models"]) == names | {"two_tower", "hybrid"}
    # Every tuned parameter comes with its validation log; a grid is widened only past a winning edge.
    ease = result["baselines"]["ease"]["l2"]
    assert result["ease_l2"] == ease["best"] == result["baselines"]["ease"]["params"]["l2"]
    tried = [value for value, _ in ease["tried"]]
    assert tried[:2] == [10.0, 100.0] and set(ease["widened"]) == set(tried[2:])
    assert set(result["baselines"]["ials"]["params"]) == {"factors", "regularization", "alpha"}
    assert result["baselines"]["transitions+ease"]["params"]["weight"] in [w for w, _ in
                                                                          result["baselines"]["transitions+ease"]
                                                                          ["weight"]["tried"]]
    models = result["models"]
    # The demo shop has hidden tastes: every collaborative model is far above popularity (mid-size shop,
    # fixed seeds; measured 0.41-0.46 against 0.15), and the reported figures are those of the rankings.
    for name in ("item_knn", "ease", "ials", "transitions+ease"):
        assert models[name]["hr@10"] >= models["popularity"]["hr@10"] + 0.15, models
    assert models["two_tower"]["hr@10"] >= models["popularity"]["hr@10"] + 0.05, models
    # The served path (both stages, through a published bundle and the Recommender) is at least as good as
    # the two-tower alone and close to the best baseline on a shop too small for a learned ranker to pay.
    assert models["hybrid"]["ndcg@10"] >= models["two_tower"]["ndcg@10"] - 0.01, models
    assert models["hybrid"]["ndcg@10"] >= max(models[name]["ndcg@10"] for name in names) - 0.03, models
    assert result["ranking_stage"]["selection"]["choice"] in result["ranking_stage"]["selection"]["cross_validation"]
    for name, metrics in models.items():
        assert metrics["hr@10"] == pytest.approx(result["curves"][name]["hr"]["10"])
        assert metrics["users"] == result["split"]["test_users"]
    table = format_table(result)
    assert table.splitlines()[0].split() == ["model", "hr@10", "ndcg@10", "recall@50", "coverage@10"]
    # The served model minus each baseline and the two-tower alone, per user, with intervals around the
    # difference of the means.
    assert set(result["differences"]) == names | {"two_tower"}
    for name, metrics in result["differences"].items():
        for metric in ("hr@10", "ndcg@10"):
            gap = models["hybrid"][metric] - models[name][metric]
            assert metrics[metric]["difference"] == pytest.approx(gap)
            assert metrics[metric]["low"] <= metrics[metric]["difference"] <= metrics[metric]["high"]
    assert "transitions+ease" in format_differences(result)
    assert any("ials regularization" in m for m in messages)


def test_cold_products_beat_random_placement_and_are_compared_with_the_rules(mid_shop: tuple) -> None:
    from modeling.cold_start import cold_items

    data, embeddings = mid_shop
    items = cold_items(data, embeddings, TwoTowerParams(epochs=2, batch_size=128))
    assert items["items"] == 30
    model, random = items["two_tower"], items["random"]
    # Content-based vectors of new products, measured 2.6x random placement over the catalogue.
    assert model["recall@50"] >= 2.0 * random["recall@50"], items
    assert model["cold_recall@10"] >= random["cold_recall@10"] + 0.1, items
    # With fewer new products (30) than places (50), listing them first finds all of them, but ranks
    # them no better than chance among themselves.
    assert items["new_first"]["recall@50"] == 1.0
    assert items["new_first"]["cold_recall@10"] < model["cold_recall@10"]
    assert items["text_similarity"]["recall@50"] >= 2.0 * random["recall@50"]
    promotion = items["over_promotion"]
    assert promotion["users"] > 0 and promotion["catalogue_share"] == pytest.approx(30 / 300)
    assert set(items["differences"]) == {"text_similarity", "new_first", "random"}


def test_comparison_with_refit_fits_every_model_on_validation_too(pipeline: Pipeline) -> None:
    embeddings = load_embeddings(pipeline.embeddings)
    params = TwoTowerParams(epochs=2, batch_size=128)
    plain = compare_leave_last_out(pipeline.data, embeddings, params, ease_l2_grid=(10.0,))
    refit = compare_leave_last_out(pipeline.data, embeddings, params, ease_l2_grid=(10.0,), refit=True)
    assert refit["refit"] is True and plain["refit"] is False
    assert refit["two_tower"]["refit_epochs"] == refit["two_tower"]["best_epoch"]
    assert refit["split"] == plain["split"]
    # Popularity counts the validation interactions too, so its ranking of the test items changes.
    assert refit["curves"]["popularity"] != plain["curves"]["popularity"]
    assert refit["models"]["two_tower"] != plain["models"]["two_tower"]


@pytest.mark.parametrize("model", [ItemKNN(neighbours=0), EASE(l2=1.0)])
def test_products_a_history_says_nothing_about_are_ordered_by_popularity_not_by_id(model) -> None:
    # Users 0-5 have items 0-2; in the other group item 5 has 6 users, item 4 five and item 3 four.
    users = [user for user in range(12) for _ in range(3)]
    items = [item for user in range(12) for item in ((0, 1, 2) if user < 6 else (3, 4, 5))]
    keep = [not ((u == 11 and i in (3, 4)) or (u == 10 and i == 3)) for u, i in zip(users, items, strict=True)]
    matrix = interaction_matrix(np.array(users)[keep], np.array(items)[keep], 12, 6)
    model.fit(matrix)
    scores = model.score(interaction_matrix(np.array([0]), np.array([0]), 1, 6))[0]
    order = np.argsort(-scores, kind="stable").tolist()
    assert sorted(order[:2]) == [1, 2]  # the history's group first, as before
    assert order[3:] == [5, 4, 3]  # nothing known about these: the most popular first, not the lowest id
    empty = model.score(sp.csr_matrix((1, 6), dtype=np.float32))[0]
    assert np.argsort(-empty, kind="stable").tolist() == [0, 1, 2, 5, 4, 3]


def test_transition_counts_and_last_items_match_hand_computed_values() -> None:
    # user 0: 1 -> 2 -> 2 (a repeat, not a transition) -> 1; user 1: 2 -> 3; user 2 has nothing.
    users, items = np.array([0, 0, 0, 0, 1, 1]), np.array([1, 2, 2, 1, 2, 3])
    counts = transition_counts(users, items, 4).toarray()
    expected = np.zeros((4, 4))
    expected[1, 2] = expected[2, 1] = expected[2, 3] = 1
    assert counts.tolist() == expected.tolist()
    assert last_items(users, items, 3).tolist() == [1, 3, -1]


def test_transitions_rank_the_usual_next_item_first_and_fall_back_to_popularity() -> None:
    # Every user walks 0 -> 1 -> 2 -> 3; item 3 is the most popular (two extra users have only it).
    users = np.repeat(np.arange(6), 4)
    items = np.tile(np.arange(4), 6)
    users, items = np.concatenate([users, [6, 7]]), np.concatenate([items, [3, 3]])
    matrix = interaction_matrix(users, items, 8, 5)
    model = Transitions().fit_sequences(matrix, users, items)
    histories = interaction_matrix(np.array([0, 1]), np.array([1, 4]), 3, 5)
    scores = model.score(histories, np.array([1, 4, -1]))
    assert int(np.argmax(scores[0])) == 2  # after item 1 always comes item 2
    assert scores[0, 2] == pytest.approx(1.0, abs=1e-5)
    assert int(np.argmax(scores[1])) == 3 == int(np.argmax(scores[2]))  # no transitions: popularity


def test_transitions_ease_blend_weights_zero_and_one_are_its_parts() -> None:
    users = np.repeat(np.arange(6), 4)
    items = np.tile(np.arange(4), 6)
    matrix = interaction_matrix(users, items, 6, 4)
    histories = interaction_matrix(np.array([0, 0]), np.array([0, 1]), 1, 4)
    last = np.array([1])
    blend = TransitionsEASE(l2=1.0, weight=0.0).fit_sequences(matrix, users, items)
    transitions, ease = blend.parts(histories, last)
    assert np.allclose(blend.score(histories, last), ease)
    blend.weight = 1.0
    assert np.allclose(blend.score(histories, last), transitions)
    assert np.abs(transitions).max() == pytest.approx(1.0) and np.abs(ease).max() == pytest.approx(1.0)


def test_implicit_als_folds_in_a_history_it_was_not_fitted_on() -> None:
    model = ImplicitALS(factors=4, regularization=0.01, iterations=30).fit(two_groups())
    new_user = interaction_matrix(np.array([0]), np.array([3]), 1, 6)
    scores = model.score(new_user)[0]
    scores[3] = -np.inf
    assert set(np.argsort(-scores)[:2]) == {4, 5}


_ALS_UNDER_OPENMP = """
import ctypes
ctypes.CDLL("libgomp.so.1", mode=ctypes.RTLD_GLOBAL)  # as importing torch does, before scipy's OpenBLAS loads
import numpy as np, scipy.sparse as sp
from modeling.baselines import ImplicitALS
matrix = sp.random(300, 400, density=0.03, format="csr", dtype=np.float32, random_state=0)
matrix.data[:] = 1
ImplicitALS(factors=256, iterations=1).fit(matrix).score(matrix[:20])
"""


def test_implicit_als_scores_without_openblas_openmp_warnings() -> None:
    """implicit's OpenMP threads call scipy's OpenBLAS (pthreads): at more than one BLAS thread it warns per user."""
    import ctypes.util

    if ctypes.util.find_library("gomp") is None:
        pytest.skip("no libgomp on this system (the warning needs OpenMP's runtime loaded globally)")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", _ALS_UNDER_OPENMP], capture_output=True, text=True, timeout=120,
                         check=False, cwd=Path(__file__).resolve().parents[2], env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OpenBLAS Warning" not in out.stderr


def test_ease_above_its_size_limit_fits_the_most_interacted_products_only() -> None:
    matrix = two_groups()  # 6 products, every one with 6 users
    extra = interaction_matrix(np.array([0, 1, 2]), np.array([6, 6, 7]), 12, 8)
    matrix = (sp.hstack([matrix, sp.csr_matrix((12, 2))]) + extra).tocsr()
    limited = EASE(l2=1.0, max_items=7).fit(matrix)
    assert limited.subset.tolist() == [0, 1, 2, 3, 4, 5, 6]  # product 7 (one user) is left out
    assert limited.weights.shape == (7, 7)
    scores = limited.score(interaction_matrix(np.array([0, 0]), np.array([0, 7]), 1, 8))
    assert scores.shape == (1, 8) and 0.0 < scores[0, 7] <= 1e-6 * np.abs(scores).max()  # only its tie-break
    full = EASE(l2=1.0).fit(matrix)
    assert int(np.argmax(np.where(np.arange(8) == 0, -np.inf, scores[0]))) in (1, 2)
    assert full.subset is None and full.weights.shape == (8, 8)


def test_item_knn_similarity_is_sparse_and_keeps_the_closest_neighbours() -> None:
    import scipy.sparse as sparse

    knn = ItemKNN(neighbours=1).fit(two_groups())
    assert sparse.issparse(knn.similarity)
    assert (np.diff(knn.similarity.indptr) == 1).all()  # one neighbour each, within the item's group
    rows, cols = knn.similarity.nonzero()
    assert ((rows < 3) == (cols < 3)).all()


def ease_by_inverse(matrix: sp.csr_matrix, l2: float) -> np.ndarray:
    """EASE's weights by the textbook formula with a general inverse (the reference)."""
    gram = (matrix.T @ matrix).toarray().astype(np.float64) + l2 * np.eye(matrix.shape[1])
    inverse = np.linalg.inv(gram)
    weights = inverse / -np.diag(inverse)
    np.fill_diagonal(weights, 0.0)
    return weights


@pytest.mark.parametrize("block", [7, 512])  # several row blocks with a ragged last one, and one block
def test_ease_cholesky_in_place_equals_the_general_inverse_for_every_lambda(monkeypatch, block: int) -> None:
    from modeling import baselines

    monkeypatch.setattr(baselines, "_EASE_BLOCK", block)
    rng = np.random.default_rng(3)
    matrix = sp.csr_matrix((rng.random((60, 25)) < 0.3).astype(np.float32))
    gram = EASEGram(matrix)
    for l2 in (0.5, 10.0, 500.0):
        expected = ease_by_inverse(matrix, l2)
        fitted = EASE(l2).fit(matrix)
        assert fitted.weights.dtype == np.float32 and fitted.subset is None
        np.testing.assert_allclose(fitted.weights, expected, rtol=1e-5, atol=1e-6)
        # One Gram matrix serves every λ and gives exactly what a fit of its own gives.
        assert np.array_equal(EASE(l2).fit(matrix, gram=gram).weights, fitted.weights)
    assert gram.gram.tolist() == (matrix.T @ matrix).toarray().tolist()  # the cache is not overwritten


def test_ease_gram_of_a_subset_is_reused_and_checked() -> None:
    rng = np.random.default_rng(4)
    matrix = sp.csr_matrix((rng.random((50, 20)) < 0.3).astype(np.float32))
    gram = EASEGram(matrix, max_items=12)
    cached, fresh = EASE(5.0, max_items=12).fit(matrix, gram=gram), EASE(5.0, max_items=12).fit(matrix)
    assert cached.subset.tolist() == fresh.subset.tolist() and len(cached.subset) == 12
    assert np.array_equal(cached.weights, fresh.weights)
    np.testing.assert_allclose(cached.weights, ease_by_inverse(matrix[:, cached.subset], 5.0), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="Gram matrix"):
        EASE(5.0).fit(matrix, gram=gram)  # another size limit
    with pytest.raises(ValueError, match="Gram matrix"):
        EASE(5.0, max_items=12).fit(matrix[:, :15], gram=gram)  # another matrix


def test_fit_baseline_refits_each_model_with_its_own_parameters() -> None:
    users = np.repeat(np.arange(12), 3)
    items = np.concatenate([np.tile(np.arange(3), 6), np.tile(np.arange(3, 6), 6)])
    matrix, order = interaction_matrix(users, items, 12, 6), (users, items)
    fitted = {"popularity": Popularity().fit(matrix), "item_knn": ItemKNN(2).fit(matrix),
              "ease": EASE(3.0).fit(matrix), "transitions": Transitions().fit_sequences(matrix, *order),
              "transitions+ease": TransitionsEASE(3.0, 0.3).fit_sequences(matrix, *order),
              "ials": ImplicitALS(factors=4, regularization=0.01, iterations=5, seed=2).fit(matrix)}
    history, last = interaction_matrix(np.array([0, 0]), np.array([0, 4]), 1, 6), np.array([4])
    for name, model in fitted.items():
        again = fit_baseline(name, model.params(), matrix, order, seed=2)
        assert type(again) is type(model) and again.params() == model.params()
        assert np.allclose(again.score(history, last), model.score(history, last), atol=1e-6), name
    # The blend takes the EASE and transitions fitted beside it, an EASE only when its λ is the blend's.
    models = fit_baselines({"ease": {"l2": 3.0}, "transitions+ease": {"l2": 3.0, "weight": 0.3}}, matrix, order)
    assert list(models) == list(BASELINES)
    assert models["transitions+ease"].ease is models["ease"]
    assert models["transitions+ease"].transitions is models["transitions"]
    other = fit_baseline("transitions+ease", {"l2": 5.0}, matrix, order, parts=models)
    assert other.ease is not models["ease"] and other.ease.l2 == 5.0 and other.weight == 0.5
    with pytest.raises(ValueError, match="unknown baseline"):
        fit_baseline("svd", {}, matrix, order)
    with pytest.raises(ValueError, match="unknown parameters of ease"):
        fit_baseline("ease", {"lambda": 1.0}, matrix, order)
