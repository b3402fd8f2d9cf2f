"""Native code of the ranking stage, compiled on this machine on first use.

The ranking stage's candidates and sparse features (``stage_kernel.c`` beside this file) cost a few hundred numpy
calls per request, each a few microseconds of dispatch for a few hundred values: most of an answer's time. The C
function does the same work in one call with the same results, bit for bit (``modeling.reranker`` checks it
against its numpy code once per process before using it, and falls back to numpy when they differ). A second
function of the same library computes the text features from the bundle's 8-bit text codes (integer dot
products, exact in any order), checked the same way.

It is compiled, by the first process that needs it, with the machine's C compiler (gcc or clang, as the compiled
ranker) into ``.native/`` at the repository's root (``RECO_NATIVE_DIR`` elsewhere), under a name that carries a
digest of the source, the compiler and the platform, so that a changed source or another machine builds its own
and every later process (a web worker, an evaluation) loads the one built. Compiling takes about half a second;
the library is written whole or not at all (processes compiling at once each rename their own complete file).
Without a compiler, with ``RECO_NATIVE=0``, or when compiling or loading fails, the numpy code serves, with one
log line. The folder holds native code that every worker runs, so it must be writable by the service's own user
only, as the code itself is.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modeling.atomic import atomic_file
from modeling.compiled_ranker import run_bounded, toolchain

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("stage_kernel.c")
DEFAULT_DIR = Path(__file__).resolve().parents[1] / ".native"
DIR_VARIABLE = "RECO_NATIVE_DIR"
SWITCH_VARIABLE = "RECO_NATIVE"
OFF = frozenset({"0", "false", "no", "off"})
FLAGS: tuple[str, ...] = ("-O3", "-ffp-contract=off", "-shared", "-fPIC", "-std=gnu11")
"""The compiler's options. ``-O3`` over ``-O2``: the call took 0.88 times as long for 50 shoppers and 0.90 for one at
100,000 products (the same inputs, both libraries in turn in one process, identical outputs). Neither level lets
the compiler reorder floating-point sums (no ``-ffast-math``); ``-ffp-contract=off`` keeps it from fusing a
multiply and an add into one rounding where the processor has such an instruction (the default of GNU C where
FMA is in the base instruction set, as on ARM), which numpy's separate roundings would not match."""
COMPILE_SECONDS = 120
FUNCTION = "stage_candidates"
TEXT_FUNCTION = "text_features"


class Csr(ctypes.Structure):
    """A square CSR matrix as the C code reads it (``Csr`` in stage_kernel.c)."""

    _fields_ = [("indptr", ctypes.c_void_p), ("indptr_wide", ctypes.c_int32), ("indices", ctypes.c_void_p),
                ("indices_wide", ctypes.c_int32), ("data", ctypes.c_void_p)]


_lock = threading.Lock()
_loaded: dict[str, Any] = {}


def enabled() -> bool:
    """Whether native code may be used (``RECO_NATIVE``, default 1; 0, false, no or off: never)."""
    return os.environ.get(SWITCH_VARIABLE, "1").strip().lower() not in OFF


def library_dir() -> Path:
    """Where compiled libraries are kept (``RECO_NATIVE_DIR``, default ``.native/`` at the repository's root)."""
    configured = os.environ.get(DIR_VARIABLE, "").strip()
    return Path(configured) if configured else DEFAULT_DIR


def library_name(compiler: str, source: bytes) -> str:
    """The file name of the library built from ``source`` by ``compiler`` on this platform."""
    digest = hashlib.sha256()
    for part in (source, compiler.encode(), " ".join(FLAGS).encode(), sys.platform.encode(),
                 platform.machine().encode()):
        digest.update(part)
        digest.update(b"\0")
    return f"stage_kernel-{digest.hexdigest()[:16]}.so"


def build(directory: Path | None = None) -> Path:
    """The stage library compiled from :data:`SOURCE` (built now into ``directory`` if it is not there yet).

    Raises:
        OSError: no C compiler, or the folder cannot be written.
        subprocess.CalledProcessError, subprocess.TimeoutExpired: the compiler failed or hung.
    """
    compiler = toolchain()
    if compiler is None:
        raise OSError("no C compiler found (tried gcc, clang)")
    source = SOURCE.read_bytes()
    directory = library_dir() if directory is None else directory
    path = directory / library_name(compiler, source)
    if path.is_file():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as temporary:
        done = run_bounded([compiler, *FLAGS, "-o", str(temporary), str(SOURCE)], COMPILE_SECONDS)
        if done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)
    logger.info("compiled the ranking stage's native code: %s", path)
    return path


def _load(name: str, argtypes: list[Any]) -> Any | None:
    """The C function ``name`` of the stage library with its argument types, loaded once per process; None (with
    one log line) when native code is off, or cannot be built or loaded here."""
    if not enabled():
        return None
    with _lock:
        if name in _loaded:
            return _loaded[name]
        function = None
        try:
            library = ctypes.CDLL(str(build()))
            function = getattr(library, name)
            function.argtypes = argtypes
            function.restype = ctypes.c_int64
        except (OSError, subprocess.SubprocessError, AttributeError) as exc:
            detail = getattr(exc, "stderr", "") or ""
            if isinstance(detail, bytes):
                detail = detail.decode(errors="replace")
            logger.warning("the ranking stage's native code is not available (%s%s); numpy computes %s",
                           exc, f": {detail.strip()[:500]}" if detail.strip() else "", WHAT[name])
            function = None
        _loaded[name] = function
        return function


_POINTER, _COUNT = ctypes.c_void_p, ctypes.c_int64
WHAT = {FUNCTION: "the candidates", TEXT_FUNCTION: "the text features"}


def stage_function() -> Any | None:
    """The C function ``stage_candidates`` with its argument types, loaded once per process; None (with one log
    line) when native code is off, or cannot be built or loaded here."""
    pointer, count = _POINTER, _COUNT
    csr = ctypes.POINTER(Csr)
    return _load(FUNCTION, [
        count, count, pointer, count, pointer,  # m, n, excluded, n_excluded, allowed
        csr, csr, csr,  # item-item, sequence, transitions
        pointer, pointer, pointer, count, count,  # histories, their decays, which decay, sequence length
        pointer, count, pointer,  # popular order, its length, excluded counts
        pointer, count, pointer,  # two-tower top, its width, counts per source
        pointer, pointer,  # popularity ranks, history lengths
        pointer, pointer, pointer, pointer, count,  # categories, brands, prices, recent decays, their width
        count, pointer,  # features per row, columns
        count, pointer, pointer, pointer,  # bound, out rows, out items, features
    ])


def text_function() -> Any | None:
    """The C function ``text_features`` (the text features from 8-bit codes) with its argument types, loaded once
    per process; None (with one log line) when native code is off, or cannot be built or loaded here."""
    pointer, count = _POINTER, _COUNT
    return _load(TEXT_FUNCTION, [
        count, count, count, pointer, pointer,  # shoppers, history width, dimensions, codes, scales
        pointer, pointer, pointer,  # histories' products and times (m, width), right-aligned, and their lengths
        pointer, pointer, pointer,  # candidates, each shopper's start and size
        pointer, count, count, count, count,  # features, their width, the three columns
    ])


def forget() -> None:
    """Load again on the next :func:`stage_function` (for tests that change the settings)."""
    with _lock:
        _loaded.clear()


def csr(matrix: Any) -> Csr | None:
    """The C view of a CSR matrix (``indptr``, ``indices`` and ``data`` arrays, e.g. a bundle's memory-mapped
    :class:`~modeling.candidates.CsrArrays` or a scipy matrix); None where the C code cannot read it as it is
    (values not float32, positions not int32 or int64, arrays not contiguous)."""
    indptr, indices, data = (np.asarray(getattr(matrix, part)) for part in ("indptr", "indices", "data"))
    if (data.dtype != np.float32 or indptr.dtype not in _POSITIONS or indices.dtype not in _POSITIONS
            or not all(array.flags.c_contiguous for array in (indptr, indices, data))):
        return None
    return Csr(indptr.ctypes.data, int(indptr.dtype == np.int64), indices.ctypes.data,
               int(indices.dtype == np.int64), data.ctypes.data)


_POSITIONS = (np.dtype(np.int32), np.dtype(np.int64))


def _int64(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.int64)


def stage_candidates(function: Any, *, n: int, excluded: np.ndarray, allowed: np.ndarray | None,
                     matrices: tuple[Csr, Csr, Csr], history_items: Sequence[np.ndarray],
                     decays: tuple[np.ndarray | None, np.ndarray | None], sequence_length: int,
                     popular_order: np.ndarray, excluded_counts: np.ndarray, two_tower: np.ndarray,
                     counts: tuple[int, int, int, int, int], popularity_rank: np.ndarray,
                     history_length: np.ndarray,
                     attributes: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None, columns: np.ndarray,
                     n_features: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Call the C function ``stage_candidates`` (:func:`stage_function`) for m shoppers.

    Args:
        function: :func:`stage_function`'s.
        n: items.
        excluded: sorted keys ``row * n + item`` never proposed.
        allowed: optional (n,) bool.
        matrices: the item-item, sequence and transition matrices (:func:`csr`).
        history_items: m arrays of item positions, oldest first.
        decays: each interaction's (H,) float32 weight under the history's and the recent half-life (histories one
            after the other), None for a half-life of 0 (weights 1).
        sequence_length: the most recent products the sequential rules read.
        popular_order: allowed positions by decreasing popularity.
        excluded_counts: (m,) items each shopper excludes.
        two_tower: (m, T) the two-tower's top, -1 pads.
        counts: proposals per shopper of the item-item, recent item-item, transition, sequential-rules and popular
            sources.
        popularity_rank: (n,) float32.
        history_length: (m,) float64 the history-length feature.
        attributes: for the category, brand and price features, the products' category and brand codes (n,) int32
            and prices (n,) float32, and each shopper's R most recent products' decays (m, R) float32; None: not
            read. The price feature is left as the ratio of the price to the recent median (before its logarithm).
        columns: (15,) int64 the feature columns the C code fills (-1: not read).
        n_features: features per row.

    Returns:
        ``(rows (e,) int64, items (e,) int64, features (e, n_features) float32)``, the unfilled columns 0.

    Raises:
        MemoryError: the C code could not allocate its scratch.
        ValueError: ``two_tower`` is not (m, T), or the decays not (m, R) with R at most 128.
    """
    m = len(history_items)
    two_tower = _int64(two_tower)
    if two_tower.ndim != 2 or len(two_tower) != m:
        raise ValueError(f"two_tower must be (m, T) for m = {m} shoppers, got shape {two_tower.shape}")
    bound = m * (two_tower.shape[1] + int(sum(counts)))
    out_rows = np.empty(bound, dtype=np.int64)
    out_items = np.empty(bound, dtype=np.int64)
    features = np.zeros((bound, n_features), dtype=np.float32)
    lengths = np.fromiter((len(items) for items in history_items), dtype=np.int64, count=m)
    pointers = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(lengths, out=pointers[1:])
    items = _int64(np.concatenate(history_items)) if m else np.zeros(0, dtype=np.int64)
    weights = np.zeros((2, len(items)), dtype=np.float32)
    decayed = 0
    for at, decay in enumerate(decays):
        if decay is not None:
            weights[at] = decay
            decayed |= 1 << at
    excluded, popular_order, excluded_counts = _int64(excluded), _int64(popular_order), _int64(excluded_counts)
    rank = np.ascontiguousarray(popularity_rank, dtype=np.float32)
    history_feature = np.ascontiguousarray(history_length, dtype=np.float64)
    source_counts, columns = _int64(np.asarray(counts)), _int64(columns)
    if attributes is None:
        category = brand = price = decay = None
        width = 0
    else:
        category, brand = (np.ascontiguousarray(codes, dtype=np.int32) for codes in attributes[:2])
        price = np.ascontiguousarray(attributes[2], dtype=np.float32)
        decay = np.ascontiguousarray(attributes[3], dtype=np.float32)
        if decay.ndim != 2 or len(decay) != m:
            raise ValueError(f"the recent products' decays must be (m, R) for m = {m} shoppers, got {decay.shape}")
        width = decay.shape[1]
    mask = None if allowed is None else np.ascontiguousarray(allowed, dtype=np.bool_)
    written = function(
        m, n, excluded.ctypes.data, len(excluded), None if mask is None else mask.ctypes.data,
        ctypes.byref(matrices[0]), ctypes.byref(matrices[1]), ctypes.byref(matrices[2]),
        pointers.ctypes.data, items.ctypes.data, weights.ctypes.data, decayed, int(sequence_length),
        popular_order.ctypes.data, len(popular_order), excluded_counts.ctypes.data, two_tower.ctypes.data,
        two_tower.shape[1], source_counts.ctypes.data, rank.ctypes.data, history_feature.ctypes.data,
        *(None if array is None else array.ctypes.data for array in (category, brand, price, decay)), width,
        n_features, columns.ctypes.data, bound, out_rows.ctypes.data, out_items.ctypes.data, features.ctypes.data)
    if written == -2:  # ERROR_BOUND: the only bound the inputs can break is the recent products' width
        raise ValueError(f"at most 128 recent products for the attribute features, got {width}")
    if written < 0:
        raise MemoryError(f"the ranking stage's native code failed (code {written})")
    return out_rows[:written], out_items[:written], features[:written]


def text_features(function: Any, *, codes: np.ndarray, scales: np.ndarray, items: np.ndarray, stamps: np.ndarray,
                  counts: np.ndarray, cand: np.ndarray, starts: np.ndarray, sizes: np.ndarray, features: np.ndarray,
                  columns: tuple[int, int, int]) -> None:
    """Call the C function ``text_features`` (:func:`text_function`) for m shoppers; writes ``features`` in place.

    Args:
        function: :func:`text_function`'s.
        codes: (n, t) int8 text codes, C-contiguous (a product's vector is its codes times its scale).
        scales: (n,) float32.
        items, stamps: (m, w) int64 each shopper's most recent products and their times, right-aligned (oldest
            first), the last ``counts`` (m,) of each row present; positions below n.
        cand: (e,) int64 candidates, below n; ``starts``, ``sizes`` (m,) int64 each shopper's part of them.
        features: (e, f) float32 C-contiguous, written at the columns ``(text_history, text_last,
            nearest_age_days)`` (-1: not written).

    Raises:
        ValueError: arrays of the wrong type, shape or layout, or that do not agree (the C code would read past
            them).
        MemoryError: the C code could not allocate its scratch.
    """
    m = len(counts)
    if codes.dtype != np.int8 or codes.ndim != 2 or not codes.flags.c_contiguous:
        raise ValueError(f"codes must be C-contiguous (n, t) int8, got {codes.dtype} {codes.shape}")
    if features.dtype != np.float32 or features.ndim != 2 or not features.flags.c_contiguous:
        raise ValueError(f"features must be C-contiguous (e, f) float32, got {features.dtype} {features.shape}")
    items, stamps, counts, cand, starts, sizes = (_int64(a) for a in (items, stamps, counts, cand, starts, sizes))
    if (items.ndim != 2 or items.shape != stamps.shape or len(items) != m or len(starts) != m or len(sizes) != m
            or len(cand) != len(features) or len(scales) != len(codes) or (m and int(counts.max()) > items.shape[1])
            or (m and int((starts + sizes).max()) > len(cand))
            or (len(cand) and (int(cand.min()) < 0 or int(cand.max()) >= len(codes)))):
        raise ValueError("the histories, their lengths, the candidates and their features do not agree in shape")
    scales = np.ascontiguousarray(scales, dtype=np.float32)
    written = function(m, items.shape[1], codes.shape[1], codes.ctypes.data, scales.ctypes.data, items.ctypes.data,
                       stamps.ctypes.data, counts.ctypes.data, cand.ctypes.data, starts.ctypes.data,
                       sizes.ctypes.data, features.ctypes.data, features.shape[1], *columns)
    if written < 0:
        raise MemoryError(f"the ranking stage's native text features failed (code {written})")
