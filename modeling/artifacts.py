"""Versioned model bundles on disk and the ``models/ACTIVE`` pointer.

A bundle is a directory ``models/<version>/``:

    manifest.json        version, created, fingerprints, parameters, metrics, library versions, whether
                         item_content's rows are unit vectors (item_content_unit)
    item_ids.npy         (n_items,) str
    item_vectors.npy     (n_items, d) float32, candidate-tower output, unit norm
    item_content.npy     (n_items, t) int8, item text embeddings as 8-bit codes (behaviour basis for new
                         shoppers; read as float32 rows where used, see CONTENT_DTYPE); bundles of earlier
                         versions hold float16 or float32 rows here, read as they are
    item_content_scale.npy  (n_items,) float32, each row's scale (row i reads codes[i] * scale[i])
    user_ids.npy         (n_users,) str, shoppers known to the model
    user_vectors.npy     (n_users, d) float32, query-tower output, unit norm
    popularity.npy       (n_items,) float32, recent (time-decayed) interaction weight
    query_tower/         SavedModel: serve(user_id, user_text, user_behaviour, history, history_weight) -> (b, d)
    candidate_tower/     SavedModel: serve(item_id, item_text, item_category, item_brand, item_price) -> (b, d)
    numpy_towers/        the same towers as arrays (modeling.exported_towers): what serving evaluates, so
                         web workers never import TensorFlow; checked against the SavedModels' source at
                         publish time (manifest "exported_towers": the largest difference)
    ranking_stage/       the second stage (modeling.reranker): item_item.*, transitions.* and sequence.*
                         (n_items, n_items) sparse sources, item_category/brand/price.npy (n_items,), ranker.txt
                         (LightGBM model, when the ranker is learned) and ranker.so (the same compiled,
                         modeling.compiled_ranker, with ranker_probe.npy: LightGBM's scores of its check rows),
                         stage.json (features, choice, trials)

The manifest's ``text_encoder`` names the ONNX export of the sentence encoder that serving uses
(``<models>/text_encoder/<fingerprint>-<format>/``, shared by every bundle of the same text model).

Bundles are written to ``models/.<version>.tmp`` and renamed, so a crash never
leaves half a bundle; ``ACTIVE`` is rewritten (temp file + rename) only after.
Arrays are loaded memory-mapped and without pickle.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from modeling.atomic import atomic_write
from modeling.errors import ArtifactError, IncompatibleBundleError
from modeling.exported_text import EXPORT_FORMAT as TEXT_EXPORT_FORMAT
from modeling.exported_text import GRAPH_FILE as TEXT_GRAPH_FILE
from modeling.exported_text import SETTINGS_FILE as TEXT_SETTINGS_FILE
from modeling.exported_text import TOKENIZER_FILE as TEXT_TOKENIZER_FILE
from modeling.exported_text import WEIGHTS_FILE as TEXT_WEIGHTS_FILE
from modeling.exported_towers import EXPORT_DIR, SETTINGS_FILE, NumpyCandidateTower, NumpyQueryTower, load_towers
from modeling.features import ItemAttributes
from modeling.index import read_item_index
from modeling.reranker import STAGE_DIR, AttributeCodes, RankingStage, rows_are_unit, stage_mismatch
from modeling.rows import QuantizedRows, mapped, quantize_rows

logger = logging.getLogger(__name__)

BUNDLE_FORMAT = 4  # 4: numpy_towers/ (serving without TensorFlow)
MANIFEST_FILE = "manifest.json"
ACTIVE_FILE = "ACTIVE"
QUERY_TOWER_DIR = "query_tower"
CANDIDATE_TOWER_DIR = "candidate_tower"
ARRAY_FILES = ("item_ids", "item_vectors", "item_content", "user_ids", "user_vectors", "popularity")
CONTENT_DTYPE = np.dtype(np.int8)
"""How the products' text vectors are stored: what every request reads most of (the ranking stage's text
features gather each candidate's row, the query tower pools the history's), so at 100,000 products with
384-d vectors the whole file ends up resident in every worker: 147 MiB as float32, 73 as float16, 37 as int8
codes with a scale per row (:class:`modeling.rows.QuantizedRows`, which also read as float32 in about half
float16's time). Cosines between unit vectors move by about 4e-4 (float16: 1e-4), far below what
orders products. Bundles written with float16 or float32 text vectors are read as they are."""
CONTENT_DTYPES = (np.dtype(np.int8), np.dtype(np.float16), np.dtype(np.float32))
CONTENT_SCALE_FILE = "item_content_scale.npy"


def stored_content(content: np.ndarray | QuantizedRows) -> QuantizedRows:
    """(n, t) text vectors as a bundle stores them: 8-bit codes with a scale per row (:data:`CONTENT_DTYPE`;
    rows read back as float32 are what serving computes with, so training rounds its own the same way)."""
    return content if isinstance(content, QuantizedRows) else quantize_rows(content)
_VERSION_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z(-[0-9]+)?$")
TRACKED_LIBRARIES = ("tensorflow", "tf-keras", "tensorflow-recommenders", "sentence-transformers", "torch", "numpy",
                     "onnxruntime", "tokenizers")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries a bundle depends on."""
    versions: dict[str, str] = {}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def is_version_name(name: str) -> bool:
    """Whether ``name`` looks like a bundle version (``YYYYMMDDTHHMMSSZ[-n]``)."""
    return bool(_VERSION_RE.match(name))


def new_version_name(models_dir: Path, now: datetime | None = None) -> str:
    """A fresh UTC-timestamp version name that does not exist in ``models_dir`` yet."""
    base = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    name, n = base, 1
    while (models_dir / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


@dataclass
class BundleArrays:
    """The numeric content of a bundle (shapes as in the module docstring)."""

    item_ids: np.ndarray
    item_vectors: np.ndarray
    item_content: np.ndarray | QuantizedRows
    user_ids: np.ndarray
    user_vectors: np.ndarray
    popularity: np.ndarray

    def validate(self) -> None:
        """Raise :class:`ArtifactError` when shapes disagree."""
        n_items = len(self.item_ids)
        problems = []
        if self.item_vectors.ndim != 2 or self.item_vectors.shape[0] != n_items:
            problems.append(f"item_vectors has shape {self.item_vectors.shape}, expected ({n_items}, d)")
        if self.item_content.ndim != 2 or self.item_content.shape[0] != n_items:
            problems.append(f"item_content has shape {self.item_content.shape}, expected ({n_items}, t)")
        if self.popularity.shape != (n_items,):
            problems.append(f"popularity has shape {self.popularity.shape}, expected ({n_items},)")
        if self.user_vectors.ndim != 2 or self.user_vectors.shape[0] != len(self.user_ids):
            problems.append(f"user_vectors has shape {self.user_vectors.shape}, expected ({len(self.user_ids)}, d)")
        elif self.item_vectors.ndim == 2 and self.user_vectors.shape[1] != self.item_vectors.shape[1]:
            problems.append(
                f"user vectors have dim {self.user_vectors.shape[1]}, item vectors {self.item_vectors.shape[1]}"
            )
        if n_items == 0:
            problems.append("the bundle has no items")
        if problems:
            raise ArtifactError("; ".join(problems))


@dataclass
class Bundle:
    """A loaded model bundle. Arrays are read-only memory maps.

    Attributes:
        version: the directory name.
        path: the bundle directory.
        manifest: parsed manifest.json.
        arrays: the numeric content.
        towers: the query and candidate towers exported to numpy (what serving runs).
        item_index: the approximate index over ``item_vectors`` written at publishing (a FAISS IVF
            index, memory-mapped read-only; see :mod:`modeling.index`), or None when the catalogue
            was below the publishing threshold.
        text_index: the same over ``item_content`` (8-bit codes), for text queries, or None.
        attribute_codes: the products' category and brand codes the stage was written with (None in
            bundles written before them: coded at load).
    """

    version: str
    path: Path
    manifest: dict[str, Any]
    arrays: BundleArrays
    towers: tuple[NumpyQueryTower, NumpyCandidateTower] = field(repr=False)
    stage: RankingStage | None = field(default=None, repr=False)
    attributes: ItemAttributes | None = field(default=None, repr=False)
    attribute_codes: AttributeCodes | None = field(default=None, repr=False)
    item_index: Any | None = field(default=None, repr=False)
    text_index: Any | None = field(default=None, repr=False)
    _saved: dict[str, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def dim(self) -> int:
        return int(self.arrays.item_vectors.shape[1])

    def query_tower(self) -> NumpyQueryTower:
        """The query tower, exported to numpy (no TensorFlow)."""
        return self.towers[0]

    def candidate_tower(self) -> NumpyCandidateTower:
        """The candidate tower, exported to numpy (no TensorFlow)."""
        return self.towers[1]

    def saved_model(self, name: str) -> Any:
        """The TensorFlow SavedModel ``name`` (QUERY_TOWER_DIR or CANDIDATE_TOWER_DIR); imports TensorFlow.

        Serving never calls this; it is for tools and tests that compare the export with its source.
        """
        with self._lock:
            if name not in self._saved:
                self._saved[name] = _load_saved_model(self.path / name)
            return self._saved[name]


def _load_saved_model(path: Path) -> Any:
    import tensorflow as tf

    from modeling import runtime as _runtime  # noqa: F401

    try:
        return tf.saved_model.load(str(path))
    except Exception as exc:  # TensorFlow raises many types for a damaged SavedModel
        raise ArtifactError(f"cannot load SavedModel at {path}: {exc}") from exc


def write_bundle(
    models_dir: Path | str,
    arrays: BundleArrays,
    manifest: dict[str, Any],
    save_towers: Callable[[Path], None],
    *,
    version: str | None = None,
) -> Path:
    """Write a bundle atomically and return its final directory.

    Args:
        models_dir: parent directory (``models/``).
        arrays: the bundle arrays (validated first).
        manifest: extra manifest content (parameters, metrics, fingerprints...).
        save_towers: writes ``query_tower/``, ``candidate_tower/``, ``numpy_towers/`` and the ranking stage into
            the given directory.
        version: version name; a new timestamp by default.

    Raises:
        ArtifactError: on inconsistent arrays or an existing version.
    """
    arrays.validate()
    models = Path(models_dir)
    models.mkdir(parents=True, exist_ok=True)
    version = version or new_version_name(models)
    final = models / version
    if final.exists():
        raise ArtifactError(f"model version {version} already exists in {models}")
    tmp = Path(tempfile.mkdtemp(dir=models, prefix=f".{version}.", suffix=".tmp"))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the bundle is read by the serving processes
    try:
        for name in ARRAY_FILES:
            value = getattr(arrays, name)
            if name.endswith("_ids"):
                value = np.asarray(value, dtype=str)
            elif name == "item_content":
                stored = stored_content(value)
                np.save(tmp / CONTENT_SCALE_FILE, stored.scales, allow_pickle=False)
                value = stored.codes
            np.save(tmp / f"{name}.npy", value, allow_pickle=False)
        save_towers(tmp)
        for tower in (QUERY_TOWER_DIR, CANDIDATE_TOWER_DIR):
            if not (tmp / tower / "saved_model.pb").is_file():
                raise ArtifactError(f"save_towers did not write {tower}/saved_model.pb")
        if not (tmp / EXPORT_DIR / SETTINGS_FILE).is_file():
            raise ArtifactError(f"save_towers did not write {EXPORT_DIR}/{SETTINGS_FILE}")
        full_manifest = {
            **manifest,
            "format": BUNDLE_FORMAT,
            "version": version,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "libraries": library_versions(),
            "counts": {"items": int(len(arrays.item_ids)), "users": int(len(arrays.user_ids))},
            "dim": int(arrays.item_vectors.shape[1]),
            "text_dim": int(arrays.item_content.shape[1]),
            # Serving then keeps the memory-mapped text vectors as they are without reading them all
            # (checked before they are stored in CONTENT_DTYPE, whose rounding is not a norm error).
            "item_content_unit": rows_are_unit(arrays.item_content),
            "item_content_dtype": CONTENT_DTYPE.name,
        }
        (tmp / MANIFEST_FILE).write_text(json.dumps(full_manifest, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("model bundle %s written to %s", version, final)
    return final


def _mapped(file: Path) -> np.ndarray:
    try:
        return mapped(file)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{file}: missing or damaged ({exc})") from exc


def _with_scales(path: Path, content: np.ndarray) -> np.ndarray | QuantizedRows:
    """A bundle's text vectors as read: 8-bit codes with the per-row scales beside them, other types as stored."""
    if content.dtype != np.int8:
        return content
    file = path / CONTENT_SCALE_FILE
    try:
        return QuantizedRows(content, mapped(file))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{file}: missing or damaged, or not one scale per text vector ({exc})") from exc


def load_item_content(path: Path | str) -> np.ndarray | QuantizedRows:
    """The (n_items, t) text vectors of the bundle folder at ``path``, mapped, as :func:`load_bundle` reads them
    (8-bit codes with their scales, float16 or float32 rows as stored), without loading the rest.

    Raises:
        ArtifactError: the vectors' file, or their scales' where they are codes, is missing or damaged.
    """
    path = Path(path)
    return _with_scales(path, _mapped(path / "item_content.npy"))


RETRAIN_ADVICE = "train a new model with this version: manage.py train --activate"
"""What a bundle this version cannot serve asks for (see :func:`incompatibility`)."""


def incompatibility(path: Path | str, manifest: dict[str, Any] | None = None) -> str:
    """Why this version cannot serve the bundle at ``path`` although it may be whole ("" when it can, as far as
    its manifest and ranking stage's metadata tell): another bundle format, or a ranking stage trained on other
    features (versions of the service change them without changing the format). Reads two small files; a
    missing or unreadable one is left to :func:`load_bundle` to report.

    Args:
        manifest: the bundle's manifest, if already read.
    """
    folder = Path(path)
    try:
        manifest = manifest if manifest is not None else json.loads(
            (folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        if manifest.get("format") != BUNDLE_FORMAT:
            return (f"bundle format {manifest.get('format')!r}, written by another version of the service (this "
                    f"version reads {BUNDLE_FORMAT})")
        meta = json.loads((folder / STAGE_DIR / "stage.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, AttributeError):
        return ""
    return stage_mismatch(meta) if isinstance(meta, dict) else ""


def load_bundle(path: Path | str, *, compiled_ranker: bool = True) -> Bundle:
    """Load and check a bundle directory (arrays and exported towers memory-mapped; SavedModels only on request);
    ``compiled_ranker``: score with the ranking stage's compiled ranker where it has one (False: LightGBM).

    Raises:
        ArtifactError: when the bundle is missing, incomplete or inconsistent.
    """
    path = Path(path)
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ArtifactError(f"{path} is not a model bundle (no {MANIFEST_FILE})")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{manifest_path}: unreadable manifest ({exc})") from exc
    problem = incompatibility(path, manifest)
    if problem:
        raise IncompatibleBundleError(f"{path}: {problem} ({RETRAIN_ADVICE})")
    loaded: dict[str, Any] = {name: _mapped(path / f"{name}.npy") for name in ARRAY_FILES}
    loaded["item_content"] = _with_scales(path, loaded["item_content"])
    arrays = BundleArrays(**loaded)
    arrays.validate()
    if arrays.item_vectors.shape[1] != manifest.get("dim"):
        raise ArtifactError(
            f"{path}: vectors have dim {arrays.item_vectors.shape[1]}, manifest says {manifest.get('dim')}"
        )
    if loaded["item_content"].dtype not in CONTENT_DTYPES:
        raise ArtifactError(f"{path}: text embeddings are {loaded['item_content'].dtype}, expected int8 codes, "
                            "float16 or float32")
    if arrays.item_content.shape[1] != manifest.get("text_dim"):
        raise ArtifactError(f"{path}: text embeddings have dim {arrays.item_content.shape[1]}, "
                            f"manifest says {manifest.get('text_dim')} (built with another text model?)")
    for tower in (QUERY_TOWER_DIR, CANDIDATE_TOWER_DIR):
        if not (path / tower / "saved_model.pb").is_file():
            raise ArtifactError(f"{path}: missing {tower}/saved_model.pb")
    towers = load_towers(path / EXPORT_DIR, text_dim=int(arrays.item_content.shape[1]))
    text = manifest.get("text_encoder")
    if text is not None:
        _check_text_export(path, text, int(arrays.item_content.shape[1]))
    if towers[0].dim != arrays.item_vectors.shape[1]:
        raise ArtifactError(f"{path}: the exported towers give {towers[0].dim}-d vectors, the bundle has "
                            f"{arrays.item_vectors.shape[1]}")
    try:
        stage = RankingStage.load(path / STAGE_DIR, compiled=compiled_ranker)
        attributes = RankingStage.load_attributes(path / STAGE_DIR)
        codes = AttributeCodes.load(path / STAGE_DIR, len(arrays.item_ids))
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: missing or damaged {STAGE_DIR}/ ({exc})") from exc
    n_items = len(arrays.item_ids)
    if stage.sources.n_items != n_items or len(attributes.category) != n_items:
        raise ArtifactError(f"{path}: the ranking stage covers {stage.sources.n_items} products, the bundle {n_items}")
    item_index = _stored_index(path, manifest, "item_index", n_items, int(arrays.item_vectors.shape[1]))
    text_index = _stored_index(path, manifest, "text_index", n_items, int(arrays.item_content.shape[1]))
    current = library_versions()
    for name, version in manifest.get("libraries", {}).items():
        if current.get(name) != version:
            logger.warning("bundle %s was built with %s %s, running %s", path.name, name, version, current.get(name))
    return Bundle(version=path.name, path=path, manifest=manifest, arrays=arrays, stage=stage, attributes=attributes,
                  attribute_codes=codes, towers=towers, item_index=item_index, text_index=text_index)


def _stored_index(path: Path, manifest: dict[str, Any], key: str, n_items: int, dim: int) -> Any | None:
    """The approximate index the manifest lists under ``key`` (None when it lists none).

    Raises:
        ArtifactError: the file is missing or damaged, or it indexes another catalogue.
    """
    if not manifest.get(key):
        return None
    what = "the approximate index" if key == "item_index" else "the approximate text index"
    try:
        index = read_item_index(path / str(manifest[key].get("file", "")))
    except ValueError as exc:
        raise ArtifactError(f"{path}: {what} {exc}") from exc
    if index.ntotal != n_items or index.d != dim:
        raise ArtifactError(f"{path}: {what} holds {index.ntotal} {index.d}-d vectors, the bundle {n_items} {dim}-d")
    return index


def text_export_path(bundle: Bundle) -> Path | None:
    """The folder of the ONNX text encoder the bundle names (``modeling.exported_text``), or None."""
    text = bundle.manifest.get("text_encoder")
    return None if text is None else bundle.path.parent / text["path"]


def _check_text_export(path: Path, text: dict[str, Any], text_dim: int) -> None:
    settings_file = path.parent / str(text.get("path", "")) / TEXT_SETTINGS_FILE
    try:
        settings = json.loads(settings_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: the text encoder export it names ({text.get('path')}) is missing or damaged "
                            f"({exc.__class__.__name__})") from exc
    missing = [name for name in (TEXT_GRAPH_FILE, TEXT_WEIGHTS_FILE, TEXT_TOKENIZER_FILE)
               if not (settings_file.parent / name).is_file()]
    if missing or settings.get("format") != TEXT_EXPORT_FORMAT:
        raise ArtifactError(f"{path}: the text encoder export it names ({text.get('path')}) is missing or damaged "
                            f"({', '.join(missing) or 'format ' + str(settings.get('format'))})")
    if settings.get("fingerprint") != text.get("fingerprint") or settings.get("dim") != text_dim:
        raise ArtifactError(f"{path}: the text encoder export {text.get('path')} is not the model the bundle was "
                            f"built with (fingerprint {settings.get('fingerprint')}, dim {settings.get('dim')})")


def list_versions(models_dir: Path | str) -> list[str]:
    """Complete bundle versions in ``models_dir``, oldest first."""
    models = Path(models_dir)
    if not models.is_dir():
        return []
    return sorted(p.name for p in models.iterdir()
                  if p.is_dir() and is_version_name(p.name) and (p / MANIFEST_FILE).is_file())


def remove_bundle(models_dir: Path | str, version: str) -> bool:
    """Delete the bundle folder of ``version`` from ``models_dir``; whether there was one.

    The folder is first renamed to a hidden name (which :func:`list_versions` never lists), then removed: a
    process listing versions meanwhile sees the bundle whole or not at all. Processes that have it loaded keep
    their mapped pages. The text encoder export that bundles share is left.

    Raises:
        ArtifactError: ``version`` is not a version name, names something other than a folder (left as it
            is), or the folder cannot be renamed.
    """
    if not is_version_name(version):
        raise ArtifactError(f"not a model version: {version!r}")
    folder = Path(models_dir) / version
    if not folder.exists():
        return False
    if not folder.is_dir():  # not a bundle this code wrote: never moved or deleted
        raise ArtifactError(f"{version} in {Path(models_dir).name}/ is not a model folder; it is not removed")
    doomed = folder.with_name(f".removing-{version}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.replace(folder, doomed)
    except FileNotFoundError:  # removed meanwhile (another deletion of the same version)
        return False
    except OSError as exc:
        raise ArtifactError(f"model {version} cannot be removed from {Path(models_dir).name}/: {exc.strerror}"
                            ) from exc
    left: list[str] = []
    shutil.rmtree(doomed, onerror=lambda _function, path, error: left.append(f"{path}: {error[1]}"))
    if left:  # hidden already (never listed again); what could not be deleted stays under the hidden name
        logger.warning("model bundle %s removed from %s, but %d file(s) of it are left in %s (%s)", version,
                       models_dir, len(left), doomed.name, left[0])
    else:
        logger.info("model bundle %s removed from %s", version, models_dir)
    return True


def read_active(models_dir: Path | str) -> str | None:
    """The version named by ``models/ACTIVE``, or ``None`` when there is no pointer."""
    pointer = Path(models_dir) / ACTIVE_FILE
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return name or None


def set_active(models_dir: Path | str, version: str) -> None:
    """Point ``models/ACTIVE`` at ``version`` (atomic replace).

    Raises:
        ArtifactError: when that version is not a complete bundle.
    """
    models = Path(models_dir)
    if not is_version_name(version) or not (models / version / MANIFEST_FILE).is_file():
        raise ArtifactError(f"no model version {version!r} in {models}")
    with atomic_write(models / ACTIVE_FILE) as handle:
        handle.write(version + "\n")
    logger.info("active model version is now %s", version)
