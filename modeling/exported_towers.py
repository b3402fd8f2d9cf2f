"""The two towers as plain arrays, evaluated with numpy: what the web workers run instead of TensorFlow.

At publish time :func:`export_towers` copies every weight and vocabulary of the trained
towers (:mod:`modeling.two_tower`) into ``numpy_towers/`` of the bundle, one ``.npy`` file
per array, so workers load them memory-mapped and share the pages. :class:`NumpyQueryTower`
and :class:`NumpyCandidateTower` repeat the towers' arithmetic (string lookups with one
out-of-vocabulary bucket, embeddings, weighted pooling, the optional multi-head attention
of the most recent item, two dense layers, L2 normalisation) in float32, and
:func:`largest_difference` checks them against the TensorFlow towers on the bundle's own
shoppers and products before the bundle is written.

Why numpy and not ONNX Runtime: the towers are a few table lookups and two small matrix
products per shopper; numpy evaluates them in tens of microseconds with no extra
dependency and no graph conversion step, and the arrays are memory-mapped like the rest
of the bundle. The string lookups (which ONNX has no direct operator for) are pandas
indexes.

Layout of ``numpy_towers/``::

    towers.json                  format, tower settings (recent_length, attention heads, key size...)
    query/<name>.npy             history_vocabulary (V,) str, history_embedding (V+1, e), hidden_kernel,
                                 hidden_bias, out_kernel, out_bias; user_vocabulary/user_embedding when the
                                 tower has a user id; positions and attention_{query,key,value,output}_{kernel,bias}
                                 when it has attention
    candidate/<name>.npy         item_vocabulary, item_embedding, category_vocabulary, category_embedding,
                                 brand_vocabulary, brand_embedding, price_embedding, hidden_*, out_*
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from modeling.errors import ArtifactError
from modeling.id_index import IdIndex
from modeling.rows import mapped, release_pages, take_rows

logger = logging.getLogger(__name__)

EXPORT_DIR = "numpy_towers"
EXPORT_FORMAT = 1
SETTINGS_FILE = "towers.json"
TOLERANCE = 1e-4
"""Largest absolute difference (per vector component) allowed between the exported and the TensorFlow towers."""

_MASKED = np.float32(-1e9)  # what Keras' masked softmax adds to masked attention scores


def _vocabulary(lookup: Any) -> np.ndarray:
    """The terms of a Keras StringLookup with one OOV index (index i + 1 is term i). Returns (V,) str."""
    terms = list(lookup.get_vocabulary())
    return np.asarray(terms[1:], dtype=str)


def _dense(layer: Any) -> dict[str, np.ndarray]:
    kernel, bias = layer.get_weights()
    return {"kernel": kernel, "bias": bias}


def export_towers(query_tower: Any, candidate_tower: Any, directory: Path | str) -> None:
    """Write the weights of trained towers (``modeling.two_tower``) to ``directory`` (created).

    Args:
        query_tower: a built ``QueryTower``.
        candidate_tower: a built ``CandidateTower``.
        directory: the export folder (``<bundle>/numpy_towers``).
    """
    from modeling.two_tower import PRICE_BOUNDARIES

    params = query_tower.params_
    query: dict[str, np.ndarray] = {
        "history_vocabulary": _vocabulary(query_tower.history_lookup),
        "history_embedding": query_tower.history_embedding.get_weights()[0],
        **{f"hidden_{k}": v for k, v in _dense(query_tower.hidden).items()},
        **{f"out_{k}": v for k, v in _dense(query_tower.out).items()},
    }
    if params.use_user_id:
        query["user_vocabulary"] = _vocabulary(query_tower.user_lookup)
        query["user_embedding"] = query_tower.user_embedding.get_weights()[0]
    key_dim = 0
    if params.attention_heads > 0:
        attention = query_tower.attention
        query["positions"] = query_tower.positions.get_weights()[0]
        for part in ("query", "key", "value", "output"):
            for name, value in _dense(getattr(attention, f"_{part}_dense")).items():
                query[f"attention_{part}_{name}"] = value
        key_dim = int(query["attention_query_kernel"].shape[-1])
    candidate: dict[str, np.ndarray] = {
        "item_vocabulary": _vocabulary(candidate_tower.item_lookup),
        "item_embedding": candidate_tower.item_embedding.get_weights()[0],
        "category_vocabulary": _vocabulary(candidate_tower.category_lookup),
        "category_embedding": candidate_tower.category_embedding.get_weights()[0],
        "brand_vocabulary": _vocabulary(candidate_tower.brand_lookup),
        "brand_embedding": candidate_tower.brand_embedding.get_weights()[0],
        "price_embedding": candidate_tower.price_embedding.get_weights()[0],
        **{f"hidden_{k}": v for k, v in _dense(candidate_tower.hidden).items()},
        **{f"out_{k}": v for k, v in _dense(candidate_tower.out).items()},
    }
    directory = Path(directory)
    for part, arrays in (("query", query), ("candidate", candidate)):
        (directory / part).mkdir(parents=True, exist_ok=True)
        for name, value in arrays.items():
            value = np.asarray(value, dtype=str) if name.endswith("_vocabulary") else np.asarray(value, np.float32)
            np.save(directory / part / f"{name}.npy", value, allow_pickle=False)
    settings = {"format": EXPORT_FORMAT, "recent_length": params.recent_length,
                "attention_heads": params.attention_heads, "key_dim": key_dim, "use_user_id": params.use_user_id,
                "price_boundaries": list(PRICE_BOUNDARIES)}
    (directory / SETTINGS_FILE).write_text(json.dumps(settings, indent=2), encoding="utf-8")


def _load_arrays(directory: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for file in sorted(directory.glob("*.npy")):
        arrays[file.stem] = mapped(file)
    return arrays


class _Lookup:
    """A StringLookup: term -> index + 1, anything else -> 0 (the OOV bucket)."""

    def __init__(self, vocabulary: np.ndarray) -> None:
        self.vocabulary = np.asarray(vocabulary)
        self.index = IdIndex(self.vocabulary)
        self._pads_absent = "" not in self.index  # then "" (a window's pad) is known to be out of vocabulary

    @property
    def pad_index(self) -> int:
        """The index of ``""`` (a window's pad): 0, the OOV bucket, unless the vocabulary holds ``""``."""
        return 0 if self._pads_absent else int(self.index.positions([""])[0]) + 1

    def __call__(self, terms: np.ndarray) -> np.ndarray:
        """Indices of (...) ``terms``, same shape. A window of 50 with a 5-product history is 45 pads: they
        are not looked up."""
        terms = np.asarray(terms)
        flat = terms.reshape(-1)
        if not self._pads_absent:
            return (self.index.positions(flat) + 1).reshape(terms.shape)
        out = np.zeros(len(flat), dtype=np.int64)
        present = flat != ""
        out[present] = self.index.positions(flat[present]) + 1
        return out.reshape(terms.shape)


def _relu_mlp(x: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
    hidden = np.maximum(x @ w["hidden_kernel"] + w["hidden_bias"], 0)
    out = hidden @ w["out_kernel"] + w["out_bias"]
    norm = np.sqrt(np.maximum(np.sum(out * out, axis=1, keepdims=True), np.float32(1e-12)))
    return (out / norm).astype(np.float32)


def _pooled(embedded: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean over axis 1: (b, L, e) and (b, L) -> (b, e); zero where all weights are 0."""
    total = weights.sum(axis=1, keepdims=True)
    summed = np.matmul(weights[:, None, :], embedded)[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, summed / np.where(total > 0, total, 1), 0).astype(np.float32)


class NumpyQueryTower:
    """The query tower on numpy arrays.

    ``serve(user_id (b,) str, user_text (b, t), user_behaviour (b, t), history (b, L) str (most recent
    first, "" pads), history_weight (b, L))`` returns (b, d) float32 unit vectors, as the SavedModel's
    ``serve`` does.
    """

    def __init__(self, arrays: dict[str, np.ndarray], settings: dict[str, Any],
                 history_lookup: _Lookup | None = None) -> None:
        """``history_lookup``: an index of the same terms as ``history_vocabulary`` to share (built if None)."""
        self.w = arrays
        self.settings = settings
        self.history_lookup = history_lookup or _Lookup(arrays["history_vocabulary"])
        self.user_lookup = _Lookup(arrays["user_vocabulary"]) if settings["use_user_id"] else None
        self.dim = int(arrays["out_bias"].shape[0])

    def serve(self, *, user_id: np.ndarray | list[str], user_text: np.ndarray, user_behaviour: np.ndarray,
              history: np.ndarray, history_weight: np.ndarray) -> np.ndarray:
        history = np.asarray(history, dtype=str)
        if history.ndim != 2:
            raise ValueError(f"history must be (b, L), got shape {history.shape}")
        return self.serve_rows(user_id=user_id, user_text=user_text, user_behaviour=user_behaviour,
                               history_rows=self.history_lookup(history), present=history != "",
                               history_weight=history_weight)

    def serve_rows(self, *, user_id: np.ndarray | list[str], user_text: np.ndarray, user_behaviour: np.ndarray,
                   history_rows: np.ndarray, present: np.ndarray, history_weight: np.ndarray) -> np.ndarray:
        """:meth:`serve` with the history already looked up: ``history_rows`` (b, L) int64 indices into the
        history vocabulary's embedding (:attr:`history_lookup` of the ids; its ``pad_index`` on pads), and
        ``present`` (b, L) bool, False on pads. A caller that keeps each product's index (the recommender,
        for the bundle's products) skips turning its positions into ids and the ids back into indices."""
        weights = np.asarray(history_weight, dtype=np.float32)
        embedded = take_rows(self.w["history_embedding"], history_rows)  # (b, L, e)
        present = np.asarray(present, dtype=bool).astype(np.float32)
        recent = int(self.settings["recent_length"])
        parts = [_pooled(embedded, weights * present), _pooled(embedded[:, :recent], present[:, :recent])]
        if self.settings["attention_heads"] > 0:
            parts.append(self._attended(embedded, present))
        parts += [np.asarray(user_text, dtype=np.float32), np.asarray(user_behaviour, dtype=np.float32)]
        if self.user_lookup is not None:
            parts.append(np.asarray(self.w["user_embedding"])[self.user_lookup(np.asarray(user_id, dtype=str))])
        return _relu_mlp(np.concatenate(parts, axis=1), self.w)

    def _attended(self, embedded: np.ndarray, present: np.ndarray) -> np.ndarray:
        """Keras MultiHeadAttention of the most recent item over the window: (b, L, e), (b, L) -> (b, e).

        The projections are matrix products over (b * L, e) rows: ``np.einsum`` of the same products, without a
        contraction path, took 5 ms each for 100 shoppers' 50-item windows (0.05 ms as matrix products)."""
        w = self.w
        x = embedded + np.asarray(w["positions"])[: embedded.shape[1]][None]
        query = _projected(x[:, :1], w["attention_query_kernel"], w["attention_query_bias"])  # (b, 1, h, k)
        rows = present > 0  # a pad's key and value are masked out: only the window's products are projected
        key = _projected(x, w["attention_key_kernel"], w["attention_key_bias"], rows)  # (b, L, h, k)
        value = _projected(x, w["attention_value_kernel"], w["attention_value_bias"], rows)
        query = query * np.float32(1.0 / np.sqrt(float(self.settings["key_dim"])))
        scores = np.einsum("bshk,bthk->bhts", key, query)  # (b, heads, 1, L)
        scores = scores + (1.0 - present[:, None, None, :]) * _MASKED
        scores = scores - scores.max(axis=-1, keepdims=True)
        probabilities = np.exp(scores)
        probabilities /= probabilities.sum(axis=-1, keepdims=True)
        attended = np.einsum("bhts,bshk->bthk", probabilities, value)  # (b, 1, h, k)
        kernel = np.asarray(w["attention_output_kernel"])  # (h, k, e)
        out = attended[:, 0].reshape(len(attended), -1) @ kernel.reshape(-1, kernel.shape[-1])
        out = out + w["attention_output_bias"]
        return (out * present[:, :1]).astype(np.float32)


def _projected(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """A multi-head projection: (b, s, e) with kernel (e, h, k) and bias (h, k) -> (b, s, h, k).

    ``rows`` (b, s) bool: only these positions are projected (the others get the bias alone)."""
    kernel = np.asarray(kernel)
    e, heads, dim = kernel.shape
    flat = x.reshape(-1, e)
    if rows is None:
        out = flat @ kernel.reshape(e, heads * dim)
    else:
        kept = rows.reshape(-1)
        out = np.zeros((len(flat), heads * dim), dtype=np.float32)
        out[kept] = flat[kept] @ kernel.reshape(e, heads * dim)
    return out.reshape(x.shape[0], x.shape[1], heads, dim) + bias


class NumpyCandidateTower:
    """The candidate tower on numpy arrays.

    ``serve(item_id (b,) str, item_text (b, t), item_category (b,) str, item_brand (b,) str,
    item_price (b,) float (negative: unknown))`` returns (b, d) float32 unit vectors.
    """

    def __init__(self, arrays: dict[str, np.ndarray], settings: dict[str, Any]) -> None:
        self.w = arrays
        self.item_lookup = _Lookup(arrays["item_vocabulary"])
        self.category_lookup = _Lookup(arrays["category_vocabulary"])
        self.brand_lookup = _Lookup(arrays["brand_vocabulary"])
        self.boundaries = np.asarray(settings["price_boundaries"], dtype=np.float32)
        self.dim = int(arrays["out_bias"].shape[0])

    def serve(self, *, item_id: np.ndarray | list[str], item_text: np.ndarray, item_category: np.ndarray,
              item_brand: np.ndarray, item_price: np.ndarray) -> np.ndarray:
        w = self.w
        price = np.asarray(item_price, dtype=np.float32)
        parts = [
            np.asarray(w["item_embedding"])[self.item_lookup(np.asarray(item_id, dtype=str))],
            np.asarray(item_text, dtype=np.float32),
            np.asarray(w["category_embedding"])[self.category_lookup(np.asarray(item_category, dtype=str))],
            np.asarray(w["brand_embedding"])[self.brand_lookup(np.asarray(item_brand, dtype=str))],
            np.asarray(w["price_embedding"])[np.searchsorted(self.boundaries, price, side="right")],
        ]
        return _relu_mlp(np.concatenate(parts, axis=1), w)


def load_towers(directory: Path | str, *, text_dim: int | None = None) -> tuple[NumpyQueryTower, NumpyCandidateTower]:
    """Load an export written by :func:`export_towers` (arrays memory-mapped).

    ``text_dim``: the size t of the text vectors the towers will be given; when known, the towers'
    first layers are checked to take inputs of that width.

    Raises:
        ArtifactError: when the folder is missing, of another format, or its arrays disagree.
    """
    directory = Path(directory)
    try:
        settings = json.loads((directory / SETTINGS_FILE).read_text(encoding="utf-8"))
        query = _load_arrays(directory / "query")
        candidate = _load_arrays(directory / "candidate")
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{directory}: missing or damaged exported towers ({exc})") from exc
    if settings.get("format") != EXPORT_FORMAT:
        raise ArtifactError(f"{directory}: exported towers of format {settings.get('format')!r}, "
                            f"this version reads {EXPORT_FORMAT}")
    try:
        candidate_tower = NumpyCandidateTower(candidate, settings)
        items = candidate_tower.item_lookup  # the history's terms are usually the same products: one index for both
        shared = items if np.array_equal(items.vocabulary, query["history_vocabulary"]) else None
        towers = NumpyQueryTower(query, settings, shared), candidate_tower
        _check_shapes(query, candidate, settings, text_dim)
    except (KeyError, ValueError) as exc:
        raise ArtifactError(f"{directory}: incomplete exported towers ({exc})") from exc
    for arrays in (query, candidate):  # read in full for the lookups' indexes, not again
        for name in [n for n in arrays if n.endswith("_vocabulary")]:
            release_pages(arrays[name])
    return towers


def _check_shapes(query: dict[str, np.ndarray], candidate: dict[str, np.ndarray], settings: dict[str, Any],
                  text_dim: int | None) -> None:
    for part, arrays in (("query", query), ("candidate", candidate)):
        for name in [n for n in arrays if n.endswith("_vocabulary")]:
            table = arrays[name.replace("_vocabulary", "_embedding")]
            if table.shape[0] != len(arrays[name]) + 1:
                raise ValueError(f"{part}/{name} has {len(arrays[name])} terms, its embedding {table.shape[0]} rows")
        if arrays["hidden_kernel"].shape[1] != arrays["out_kernel"].shape[0]:
            raise ValueError(f"{part}: hidden and output layers do not fit together")
    history_dim = int(query["history_embedding"].shape[1])
    width = 2 * history_dim
    if settings["attention_heads"] > 0:
        for name in ("positions", *(f"attention_{part}_{kind}" for part in ("query", "key", "value", "output")
                                    for kind in ("kernel", "bias"))):
            query[name]  # noqa: B018  (KeyError names a missing array)
        width += history_dim
    if settings["use_user_id"]:
        width += int(query["user_embedding"].shape[1])
    if text_dim is not None:
        widths = {"query": (width + 2 * text_dim, query),
                  "candidate": (sum(int(candidate[f"{name}_embedding"].shape[1])
                                    for name in ("item", "category", "brand", "price")) + text_dim, candidate)}
        for part, (expected, arrays) in widths.items():
            if arrays["hidden_kernel"].shape[0] != expected:
                raise ValueError(f"{part} tower takes inputs of width {arrays['hidden_kernel'].shape[0]}, "
                                 f"its inputs have {expected} (text vectors of {text_dim})")
    if query["out_bias"].shape != candidate["out_bias"].shape:
        raise ValueError(f"query vectors have dim {query['out_bias'].shape}, candidate vectors "
                         f"{candidate['out_bias'].shape}")


def largest_difference(exported: np.ndarray, original: np.ndarray) -> float:
    """Max absolute difference between two (n, d) arrays of tower outputs (0.0 when empty).

    Raises:
        ArtifactError: when the shapes differ or the difference exceeds :data:`TOLERANCE`.
    """
    if exported.shape != original.shape:
        raise ArtifactError(f"exported towers give shape {exported.shape}, TensorFlow {original.shape}")
    difference = float(np.max(np.abs(exported - original))) if exported.size else 0.0
    if not difference <= TOLERANCE:
        raise ArtifactError(f"exported towers differ from TensorFlow's by {difference:.2e} (> {TOLERANCE:.0e})")
    return difference
