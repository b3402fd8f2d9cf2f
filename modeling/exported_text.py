"""The sentence encoder exported to ONNX: text vectors in web workers without torch.

Training encodes product text with sentence-transformers (torch). Serving encodes a few
texts per request (text queries, products added after training); loading torch for that
costs each worker about 250 MB and several seconds. At publish time
:func:`ensure_text_export` exports the model's transformer once per text model to
``<models>/text_encoder/<fingerprint>-<format>/`` (ONNX graph, its weights, the tokenizer, settings) and checks
that :class:`OnnxTextEncoder` gives sentence-transformers' vectors on probe texts; the bundle's
manifest names the export. :class:`OnnxTextEncoder` runs the graph with ONNX Runtime, the
tokenizer with the ``tokenizers`` library (the same Rust tokenizer transformers uses), then
the model's mean pooling and L2 normalisation in numpy.

Why ONNX Runtime: it is the maintained runtime for exported transformer graphs (an encoder
of six attention layers is not worth re-implementing by hand), loads in a fraction of a second
and needs neither torch nor TensorFlow.

Only the architecture of the bundled all-MiniLM-L6-v2 is exported: a transformer, mean pooling
and normalisation (``modules.json``); any other pipeline is refused with a clear error, and
serving then falls back to sentence-transformers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from modeling.errors import ArtifactError

logger = logging.getLogger(__name__)

EXPORTS_DIR = "text_encoder"  # under the models directory, shared by every bundle of the same text model
GRAPH_FILE = "model.onnx"
WEIGHTS_FILE = "model.onnx.data"  # the graph's weights as external data: ONNX Runtime maps them from the file,
# so the workers share those pages (about 75 MB less private memory per worker than weights inside the graph)
TOKENIZER_FILE = "tokenizer.json"
SETTINGS_FILE = "encoder.json"
EXPORT_FORMAT = 2  # 2: weights in model.onnx.data
TOLERANCE = 1e-5
"""Largest absolute difference (per component) allowed between the export's vectors and sentence-transformers'."""
PROBE_TEXTS = (
    "espresso coffee grinder",
    "Title: Dog leash\nBrand: Acme\nCategory: Pet Supplies > Dogs",
    "",
    "Café crème, ñandú, 日本語のテキスト 🙂",
    "a long description " * 200,  # truncated to the model's maximum length
)
_MODULES = ("sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
            "sentence_transformers.models.Normalize")


def model_fingerprint(model_path: str | Path) -> str:
    """sha256 of a sentence-transformers folder's configuration, tokenizer and weights (first 16 hex digits)."""
    root = Path(model_path)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in {".json", ".txt", ".safetensors",
                                                                                   ".bin"}):
        digest.update(file.relative_to(root).as_posix().encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _check_pipeline(root: Path) -> dict[str, Any]:
    """The settings of a transformer + mean pooling + normalise folder; ArtifactError for anything else."""
    try:
        modules = [m["type"] for m in json.loads((root / "modules.json").read_text(encoding="utf-8"))]
        pooling = json.loads((root / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
        bert = json.loads((root / "sentence_bert_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{root}: not a sentence-transformers folder that can be exported ({exc})") from exc
    modes = {key for key, value in pooling.items() if key.startswith("pooling_mode_") and value}
    mean_only = modes == {"pooling_mode_mean_tokens"}
    if tuple(modules) != _MODULES or not mean_only or not (root / TOKENIZER_FILE).is_file():
        raise ArtifactError(f"{root}: only transformer + mean pooling + normalise models (with a tokenizer.json) "
                            f"are exported, this one has {modules}")
    return {"max_seq_length": int(bert.get("max_seq_length", 256)), "dim": int(pooling["word_embedding_dimension"])}


def export_text_encoder(model_path: str | Path, directory: Path) -> dict[str, Any]:
    """Export a sentence-transformers model to ``directory`` (written to a temp folder, then renamed).

    Imports torch and sentence-transformers (training-time only).

    Returns:
        The export's settings (also in ``encoder.json``), with ``max_abs_difference`` on :data:`PROBE_TEXTS`.

    Raises:
        ArtifactError: for a model of another architecture, vectors further than :data:`TOLERANCE` apart, or
            something other than a folder at ``directory``.
    """
    if directory.exists() and not directory.is_dir():  # before the export's work; a file is never replaced
        raise ArtifactError(f"{directory} exists and is not a folder; it is not replaced")
    import torch
    from sentence_transformers import SentenceTransformer

    root = Path(model_path)
    settings = {"format": EXPORT_FORMAT, **_check_pipeline(root), "model_name": root.name,
                "fingerprint": model_fingerprint(root)}
    model = SentenceTransformer(str(root), device="cpu")
    transformer = model[0].auto_model.eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.transformer(input_ids=input_ids, attention_mask=attention_mask,
                                    token_type_ids=token_type_ids).last_hidden_state

    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the export is read by the serving processes
    try:
        sample = model.tokenizer(list(PROBE_TEXTS[:2]), padding=True, return_tensors="pt")
        names = ["input_ids", "attention_mask", "token_type_ids"]
        axes = {"b": 0, "s": 1}
        # The TorchScript exporter (dynamo=False: it needs no onnxscript) warns that it is deprecated and that
        # traced Python conditions are constants; the probe comparison below is what checks the graph.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(LastHiddenState(), tuple(sample[n] for n in names), str(tmp / GRAPH_FILE),
                              input_names=names, output_names=["last_hidden_state"],
                              dynamic_axes={n: {v: k for k, v in axes.items()} for n in [*names, "last_hidden_state"]},
                              opset_version=17, dynamo=False)
        import onnx

        graph = onnx.load(str(tmp / GRAPH_FILE))
        onnx.save_model(graph, str(tmp / GRAPH_FILE), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=WEIGHTS_FILE, size_threshold=1024)
        shutil.copyfile(root / TOKENIZER_FILE, tmp / TOKENIZER_FILE)
        (tmp / SETTINGS_FILE).write_text(json.dumps(settings, indent=2), encoding="utf-8")
        exported = OnnxTextEncoder(tmp).encode(list(PROBE_TEXTS))
        original = model.encode(list(PROBE_TEXTS), normalize_embeddings=True, convert_to_numpy=True)
        difference = float(np.abs(exported - original).max())
        if not difference <= TOLERANCE:
            raise ArtifactError(f"the ONNX text encoder differs from sentence-transformers by {difference:.2e} "
                                f"(> {TOLERANCE:.0e})")
        settings["max_abs_difference"] = difference
        (tmp / SETTINGS_FILE).write_text(json.dumps(settings, indent=2), encoding="utf-8")
        for file in tmp.iterdir():  # onnx writes the weights file private (0600): serving may run as another user
            os.chmod(file, 0o644)
        if directory.exists() and not (directory / SETTINGS_FILE).is_file():
            shutil.rmtree(directory)  # a folder left by something else: complete exports always have settings
        try:
            os.replace(tmp, directory)
        except OSError:  # another process exported the same model first
            if not (directory / SETTINGS_FILE).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("text encoder %s exported to %s (largest difference %.1e)", root.name, directory, difference)
    return settings


def ensure_text_export(models_dir: Path | str, model_path: str | Path) -> dict[str, Any]:
    """The export of ``model_path`` under ``models_dir/text_encoder/``, made now if missing.

    Returns:
        ``{"path": folder relative to models_dir, "fingerprint", "max_abs_difference", "dim"}`` for a manifest.
    """
    fingerprint = model_fingerprint(model_path)
    relative = f"{EXPORTS_DIR}/{fingerprint}-{EXPORT_FORMAT}"  # bundles naming an older layout keep theirs
    directory = Path(models_dir) / relative
    if (directory / SETTINGS_FILE).is_file():
        settings = json.loads((directory / SETTINGS_FILE).read_text(encoding="utf-8"))
    else:
        settings = export_text_encoder(model_path, directory)
    return {"path": relative, "fingerprint": fingerprint, "dim": settings["dim"],
            "max_abs_difference": settings.get("max_abs_difference")}


class OnnxTextEncoder:
    """Sentence vectors from an export written by :func:`export_text_encoder`; no torch.

    ``encode(texts)`` returns (n, t) float32 unit vectors, as ``TextEncoder.encode`` does.

    Raises:
        ArtifactError: when the folder is missing, of another format, or unreadable.
    """

    def __init__(self, directory: Path | str, *, threads: int = 1) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        directory = Path(directory)
        try:
            settings = json.loads((directory / SETTINGS_FILE).read_text(encoding="utf-8"))
            if settings.get("format") != EXPORT_FORMAT:
                raise ArtifactError(f"{directory}: text encoder export of format {settings.get('format')!r}, "
                                    f"this version reads {EXPORT_FORMAT}")
            tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.enable_cpu_mem_arena = False  # a few texts per request: no arena kept at its largest batch
            self.session = onnxruntime.InferenceSession(str(directory / GRAPH_FILE), options,
                                                        providers=["CPUExecutionProvider"])
        except ArtifactError:
            raise
        except Exception as exc:  # onnxruntime raises its own types for a damaged graph
            raise ArtifactError(f"{directory}: missing or damaged text encoder export ({exc})") from exc
        tokenizer.enable_truncation(max_length=int(settings["max_seq_length"]))
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106  (a token, not a password)
        self.tokenizer = tokenizer
        self.settings = settings
        self.model_name = str(settings.get("model_name", ""))

    @property
    def dim(self) -> int:
        return int(self.settings["dim"])

    def encode(self, texts: list[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Unit vectors of ``texts``. Returns (n, t) float32 (``progress`` is accepted for TextEncoder's signature).

        The texts are encoded longest first, as sentence-transformers orders them, so that a batch holds texts of
        about one length: each batch is padded to its longest text, and one 600-word description among short
        titles made its 63 neighbours cost as much as it. The vectors come back in the texts' order, as another
        batching gives them up to rounding (ONNX Runtime masks the padding out; on the shared data sets, equal to
        the bit: ``benchmarks/text_batches.py``)."""
        texts = [str(t) for t in texts]
        order = np.argsort([-len(t) for t in texts], kind="stable")
        vectors = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            batch = order[start:start + batch_size]
            vectors[batch] = self.encode_batch([texts[n] for n in batch])
        return vectors

    def encode_batch(self, texts: list[str]) -> np.ndarray:
        """Unit vectors of ``texts`` run as one batch, padded to the longest. Returns (n, t) float32."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        encoded = self.tokenizer.encode_batch([str(t) for t in texts])
        ids = np.asarray([e.ids for e in encoded], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encoded], dtype=np.int64)
        types = np.asarray([e.type_ids for e in encoded], dtype=np.int64)
        hidden = self.session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return (pooled / norms).astype(np.float32)
