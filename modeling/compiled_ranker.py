"""LambdaMART rankers compiled to native code when a bundle is published.

LightGBM's own ``Booster.predict`` walks its trees in a generic loop: at 100,000 products a LambdaMART ranker
of 50 rounds scored one shopper's ~180 candidates in about 0.2 ms and 100 shoppers' ~22,000 in about 18 ms, a
fifth of the engine's time for a batch. treelite turns the booster into a tree model and tl2cgen compiles that
into a small shared library (each tree an ``if``/``else`` nest, built with the machine's C compiler): the same
scores, bit for bit, in about a third of the time (0.07 and 5.3 ms on the same rows, measured side by side;
``benchmarks/serving.py --compare-compiled-ranker`` measures what that makes of a whole request). These are
the libraries made for this (dmlc's tree-model compilers); nothing here walks trees by hand.

Where lleaves (LightGBM's model text compiled through LLVM) is installed, it generates the trees' code instead: a
loop over the rows with every tree inlined, the same scores again, in about half of tl2cgen's library's time (0.089
against 0.167 ms for one shopper's 226 rows, 8.0 against 16.8 ms for 100 shoppers', the serving benchmark's ranker
of 100 trees, side by side: ``benchmarks/compiled_rows.py``). It compiles in a process of its own (LLVM's
in-process loader may abort on a forest too large for its code model: the publishing process must survive that),
for any processor of the architecture (no instructions of the publishing machine's own), with every tree in one
block, so that each row's trees are summed in the booster's order, as LightGBM sums them (lleaves' default blocks
of 34 trees add their partial sums: scores a rounding apart). Its object is linked with a small C entry
(:data:`LLEAVES_ROWS_SOURCE`) into the same ``ranker.so``, which workers load with ctypes: neither lleaves nor LLVM
is imported by a worker. Where lleaves is missing or fails, or its library fails the check, tl2cgen compiles the
booster as before.

At publish time :func:`compile_booster` writes ``ranker.so`` beside the booster's text and checks it as
loading does (a bundle published where no C compiler is found, or whose library fails the check, has none,
and serves through LightGBM). At load :func:`load_compiled` checks the library against the booster on probe
rows built from the booster's own split thresholds (thresholds drawn from its splits, the float32 values
either side of them, zeros and missing values) and returns nothing, with a log line, when the library is
missing, does not load (another platform) or scores any probe row differently: the booster then serves, as
before; it also serves a request whose compiled scoring fails. Publishing also stores LightGBM's scores of
those probe rows (``ranker_probe.npy``) and a digest of the booster's text, so that a web worker checks its
library against them without importing LightGBM or tl2cgen; the booster is then read from its text only if
the library fails a request. The library is native code run by every worker that loads the bundle, so the
models folder (and the shared model store, where one is used) must be writable only by the service's own
user, as the code it runs is.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.util
import io
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from modeling.atomic import atomic_file

logger = logging.getLogger(__name__)

COMPILED_FILE = "ranker.so"
PROBE_FILE = "ranker_probe.npy"
"""LightGBM's raw scores (float64) of :func:`probe_rows` of the booster's text, stored at publishing."""
TOOLCHAINS: tuple[str, ...] = ("gcc", "clang")
"""C compilers tried, in this order (the first found on PATH builds the library)."""
PROBE_ROWS = 512
TOLERANCE = 0.0
"""Largest difference of a probe row's score allowed: none (the compiled trees add the same leaf values in the
same order, so the scores are identical; a split taken the other way would move one by a leaf's value)."""
ZERO_THRESHOLD = np.float32(1e-35)
"""LightGBM's ``kZeroThreshold``: it bins and predicts values of at most this magnitude as 0, the compiled
trees compare them as they are (one split in a few thousand probe rows went the other way), so they are
given 0."""
_THRESHOLD_LINE = re.compile(r"^threshold=(.*)$", re.MULTILINE)
_FEATURE_LINE = re.compile(r"^split_feature=(.*)$", re.MULTILINE)
_MAX_FEATURE_LINE = re.compile(r"^max_feature_idx=(\d+)$", re.MULTILINE)


ROWS_FUNCTION = "recoapi_predict_rows"
"""The entry point :func:`compile_booster` adds to the library: every row of a float32 matrix in one call."""
ROWS_SOURCE = r"""
/* Added at publishing: score n rows of f float32 values in one call (NaN: missing; magnitudes of at most 1e-35:
   0, as LightGBM reads them), the raw score of row i into out[i]. tl2cgen's own predictor builds a matrix object
   and its output per call through ctypes, which cost more than the trees for one shopper's few hundred rows. */
int64_t recoapi_predict_rows(const float* rows, int64_t n, int64_t f, double* out) {
  union Entry* entry = (union Entry*) malloc(sizeof(union Entry) * (size_t) (f > 0 ? f : 1));
  if (entry == NULL) return -1;
  for (int64_t i = 0; i < n; ++i) {
    const float* row = rows + i * f;
    for (int64_t j = 0; j < f; ++j) {
      float value = row[j];
      if (isnan(value)) { entry[j].missing = -1; }
      else { entry[j].fvalue = (fabsf(value) <= 1e-35f) ? 0.0 : (double) value; }
    }
    double result[N_TARGET * MAX_N_CLASS];
    for (int k = 0; k < N_TARGET * MAX_N_CLASS; ++k) { result[k] = 0.0; }
    predict(entry, 1, result);
    out[i] = result[0];
  }
  free(entry);
  return n;
}
"""
ROWS64_FUNCTION = "recoapi_predict_rows64"
"""The entry of an lleaves library for float64 rows (a tl2cgen library scores those through tl2cgen's predictor)."""
LLEAVES_ROWS_SOURCE = r"""
/* The entries of a ranker compiled by lleaves (linked with its object at publishing): score n rows of f float32
   (or float64) values, the raw score of row i into out[i]. lleaves' forest_root reads float64 rows; the rows are
   converted a block at a time (NaN: missing; magnitudes of at most LightGBM's zero threshold, 1e-35f: 0, as
   LightGBM reads them), each row's first RECOAPI_N_FEATURES values (the booster's, compiled in; more columns are
   not read, fewer are refused: -2). Keeps nothing between calls: any number of threads may score at once. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

void forest_root(double* data, double* out, int32_t start, int32_t end);

#define ROWS_BLOCK 256

static int64_t score_rows(const float* rows32, const double* rows64, int64_t n, int64_t f, double* out) {
  const int64_t width = RECOAPI_N_FEATURES;
  if (f < width) return -2;
  if (n <= 0) return 0;
  int64_t rows = n < ROWS_BLOCK ? n : ROWS_BLOCK;
  double* block = (double*) malloc(sizeof(double) * (size_t) rows * (size_t) (width > 0 ? width : 1));
  if (block == NULL) return -1;
  for (int64_t start = 0; start < n; start += ROWS_BLOCK) {
    int64_t count = n - start < ROWS_BLOCK ? n - start : ROWS_BLOCK;
    for (int64_t i = 0; i < count; ++i) {
      for (int64_t j = 0; j < width; ++j) {
        int64_t at = (start + i) * f + j;
        double value = rows32 != NULL ? (double) rows32[at] : rows64[at];
        block[i * width + j] = (!isnan(value) && fabs(value) <= (double) 1e-35f) ? 0.0 : value;
      }
    }
    forest_root(block, out + start, 0, (int32_t) count);
  }
  free(block);
  return n;
}

int64_t recoapi_predict_rows(const float* rows, int64_t n, int64_t f, double* out) {
  return score_rows(rows, NULL, n, f, out);
}

int64_t recoapi_predict_rows64(const double* rows, int64_t n, int64_t f, double* out) {
  return score_rows(NULL, rows, n, f, out);
}
"""
LLEAVES_SCRIPT = """
import sys

import lleaves

model = lleaves.Model(model_file=sys.argv[1])
if model.num_model_per_iteration() != 1:
    sys.exit("not a booster of one score per row")
model.compile(cache=sys.argv[2], raw_score=True, fblocksize=max(1, model.num_trees()), fcodemodel="small",
              target_cpu="generic", target_cpu_features="")
"""
"""Run in a process of its own by :func:`compile_booster`: lleaves compiles the booster's text (argv[1]) into an
object file (argv[2]). One block of every tree, generic code, the small code model (see the module's text)."""
GENERATORS: tuple[str, ...] = ("lleaves", "tl2cgen")
"""Code generators tried at publishing, in this order (the first whose library scores as LightGBM does serves)."""
COMPILE_SECONDS = 600
"""The most each step of a generator's compilation (lleaves' process, the compiler's) may take before the next
generator is tried."""
ROWS_HEADER_NEEDS: tuple[str, ...] = ("#define N_TARGET 1\n", "#define MAX_N_CLASS 1\n", "double fvalue;",
                                     "void predict(union Entry* data, int pred_margin, double* result);")
"""What the generated header must declare for :data:`ROWS_SOURCE` to fit it: one target and class, double values
and results (tl2cgen 1.0 writes that for LightGBM's rankers); otherwise the library is built without it."""


class CompileError(RuntimeError):
    """The booster could not be compiled (no C compiler, or the compiler failed)."""


def toolchain() -> str | None:
    """The first of :data:`TOOLCHAINS` on PATH, or None."""
    return next((name for name in TOOLCHAINS if shutil.which(name)), None)


def run_bounded(command: list[str], timeout: float, cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    """``subprocess.run(command, capture_output=True, text=True)`` in a session of its own, whose every process (a
    compiler's own children: cc1, as, ld; lleaves' LLVM) is killed when ``timeout`` seconds pass, not only the one
    started (``subprocess.run`` kills that one alone, and its children went on compiling).

    Raises:
        subprocess.TimeoutExpired: the command ran past ``timeout`` (its processes are killed by then).
        OSError: the command could not be started.
    """
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                               cwd=cwd, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except BaseException:  # past its time, or this process interrupted: none of the session's processes is left
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # the session's group: its id is the leader's pid
        process.kill()
        process.communicate()  # reaped, its pipes closed
        raise
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def compile_booster(booster: Any, model_text: str, path: Path,
                    generators: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Compile a LightGBM ``booster`` (whose text is ``model_text``) into the shared library ``path`` (written
    whole or not at all), by the first of ``generators`` (default :data:`GENERATORS`) that builds a library scoring
    the probe rows as LightGBM does.

    Returns:
        what the stage's metadata records: the compiler, the generator and the seconds it took (and why a generator
        tried before it did not serve).

    Raises:
        CompileError: when no C compiler is found or no generator's library serves.
        ValueError: an unknown generator.
    """
    compiler = toolchain()
    if compiler is None:
        raise CompileError(f"no C compiler found (tried {', '.join(TOOLCHAINS)})")
    started = time.perf_counter()
    # LightGBM scores the probe rows once: stored for the workers, and checked here as a worker checks them.
    try:
        expected = np.asarray(booster.predict(probe_rows(model_text, feature_count(model_text)), num_threads=1),
                              dtype=np.float64)
    except ValueError as exc:
        raise CompileError(f"the ranker's probe rows cannot be made: {exc}") from exc
    stored = path.with_name(PROBE_FILE)
    record = {"file": path.name, "compiler": compiler, "probe": PROBE_FILE,
              "probe_sha256": hashlib.sha256(expected.tobytes()).hexdigest(), "text_sha256": text_digest(model_text)}
    failures: dict[str, str] = {}
    for generator in generators or GENERATORS:
        build = _BUILDERS.get(generator)
        if build is None:
            raise ValueError(f"unknown generator {generator!r}; one of {', '.join(_BUILDERS)}")
        try:
            with atomic_file(path) as temporary:
                with_rows = build(booster, model_text, compiler, temporary)
        except CompileError as exc:
            failures[generator] = str(exc)
            logger.info("the ranker was not compiled by %s: %s", generator, exc)
            continue
        with atomic_file(stored) as temporary, open(temporary, "wb") as handle:
            np.save(handle, expected, allow_pickle=False)
        published = {**record, "generator": generator, "rows_function": with_rows}
        if load_compiled(path.parent, booster, model_text, file=path.name, published=published) is not None:
            if failures:
                published["not_compiled_by"] = failures
            return {**published, "seconds": round(time.perf_counter() - started, 2)}
        failures[generator] = f"the ranker compiled by {generator} with {compiler} does not score as LightGBM does"
        logger.warning("%s (see the log above)", failures[generator])
        path.unlink(missing_ok=True)
        stored.unlink(missing_ok=True)
    raise CompileError("; ".join(failures.values()))


def _tl2cgen_library(booster: Any, model_text: str, compiler: str, target: Path) -> bool:
    """Write tl2cgen's library of ``booster`` to ``target``; whether it has :data:`ROWS_FUNCTION`."""
    output = io.StringIO()
    try:
        import tl2cgen
        import treelite

        with tempfile.TemporaryDirectory(prefix="ranker-source-") as source, contextlib.redirect_stdout(output):
            model = treelite.frontend.from_lightgbm(booster)
            tl2cgen.generate_c_code(model, source, params={"parallel_comp": 1})
            header = (Path(source) / "header.h").read_text(encoding="utf-8")
            with_rows = all(part in header for part in ROWS_HEADER_NEEDS)
            if with_rows:
                with open(Path(source) / "main.c", "a", encoding="utf-8") as main:
                    main.write(ROWS_SOURCE)
            built = tl2cgen.create_shared(compiler, source, nthread=1, long_build_time_warning=False)
            shutil.move(str(built), target)
    except Exception as exc:  # noqa: BLE001  (a compiler error of any kind leaves the booster serving)
        raise CompileError(f"compiling the ranker with {compiler} failed: {exc}") from exc
    finally:
        if output.getvalue().strip():
            logger.debug("ranker compilation: %s", output.getvalue().strip())
    return with_rows


def installed(name: str) -> bool:
    """Whether the module ``name`` can be imported here (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent that does not import, a module set to None
        return False


def _lleaves_library(booster: Any, model_text: str, compiler: str, target: Path) -> bool:
    """Write the library of lleaves' object of ``model_text`` and :data:`LLEAVES_ROWS_SOURCE` to ``target``
    (``booster``: unused, the text is what lleaves reads); it always has :data:`ROWS_FUNCTION`."""
    if not installed("lleaves"):
        raise CompileError("lleaves is not installed")
    try:
        width = feature_count(model_text)
        with tempfile.TemporaryDirectory(prefix="ranker-lleaves-") as folder:
            source = Path(folder)
            (source / "ranker.txt").write_text(model_text, encoding="utf-8")
            (source / "rows.c").write_text(LLEAVES_ROWS_SOURCE, encoding="utf-8")
            steps = ([sys.executable, "-c", LLEAVES_SCRIPT, str(source / "ranker.txt"), str(source / "forest.o")],
                     [compiler, "-O2", "-shared", "-fPIC", "-std=gnu11", f"-DRECOAPI_N_FEATURES={width}", "-o",
                      str(target), str(source / "rows.c"), str(source / "forest.o")])
            for step in steps:
                done = run_bounded(step, COMPILE_SECONDS, cwd=folder)
                if done.returncode != 0:
                    logger.debug("ranker compilation by lleaves (%s): %s", Path(step[0]).name, done.stderr.strip())
                    detail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
                    raise CompileError(f"compiling the ranker with lleaves failed: {detail[:500]}")
    except CompileError:
        raise
    except Exception as exc:  # noqa: BLE001  (a crash, a timeout, a full disk: tl2cgen is tried next)
        raise CompileError(f"compiling the ranker with lleaves failed: {exc}") from exc
    return True


_BUILDERS: dict[str, Callable[[Any, str, str, Path], bool]] = {"lleaves": _lleaves_library,
                                                               "tl2cgen": _tl2cgen_library}


def text_digest(model_text: str) -> str:
    """The SHA-256 of a booster's text: what its stored probe scores belong to."""
    return hashlib.sha256(model_text.encode("utf-8")).hexdigest()


def feature_count(model_text: str) -> int:
    """How many features a LightGBM booster's text reads (its ``max_feature_idx`` + 1).

    Raises:
        ValueError: when the text has no such line.
    """
    found = _MAX_FEATURE_LINE.search(model_text)
    if found is None:
        raise ValueError("the booster's text has no max_feature_idx line")
    return int(found.group(1)) + 1


class CompiledBooster:
    """A compiled booster's predictions: ``predict`` as ``Booster.predict`` gives them (raw scores).

    A library published with :data:`ROWS_FUNCTION` scores float32 rows through it, in one ctypes call, from any
    thread at once (it keeps nothing between calls; the call releases the GIL). Otherwise (libraries published
    before it, float64 rows of a tl2cgen library; an lleaves library scores float64 rows through
    :data:`ROWS64_FUNCTION`) tl2cgen's predictor scores; it may be used by one thread at a time, so each thread
    gets its own (a gunicorn worker serves requests on several threads), all of them sharing the one library.
    Such a predictor is made on a thread's first use of it, and at load only for libraries without the function.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        library = ctypes.CDLL(str(path))  # fails here, at load, when the library does not load
        # Closed with this object, as tl2cgen closes its predictors' copies: the system keeps one copy of a library
        # per path while any handle is open, so a library written later at the same path would not be read.
        weakref.finalize(self, _close, library._handle)
        self._rows = _rows_function(library)
        self._rows64 = _rows_function(library, ROWS64_FUNCTION)  # lleaves' libraries: float64 rows too
        if self._rows is None:
            self._predictor()  # fails here, at load, when tl2cgen cannot use the library

    def _predictor(self) -> Any:
        predictor = getattr(self._local, "predictor", None)
        if predictor is None:
            import tl2cgen

            predictor = self._local.predictor = tl2cgen.Predictor(str(self.path), nthread=1)
        return predictor

    def predict(self, features: np.ndarray, num_threads: int = 1) -> np.ndarray:
        """(r,) float64 raw scores of (r, F) float32 or float64 feature rows (NaN: missing; other types are read
        as float32). ``num_threads`` is accepted for ``Booster.predict``'s signature; the library scores on the
        calling thread."""
        rows = np.asarray(features)
        rows = np.ascontiguousarray(rows, dtype=rows.dtype if rows.dtype in (np.float32, np.float64) else np.float32)
        if len(rows) == 0:
            return np.zeros(0, dtype=np.float64)
        function = self._rows if rows.dtype == np.float32 else self._rows64
        if function is not None and rows.ndim == 2:
            scores = np.empty(len(rows), dtype=np.float64)
            written = function(rows.ctypes.data, len(rows), rows.shape[1], scores.ctypes.data)
            if written == -2:
                raise ValueError(f"the compiled ranker reads more features than the rows' {rows.shape[1]}")
            if written != len(rows):
                raise MemoryError("the compiled ranker could not allocate a row")
            return scores
        tiny = (np.abs(rows) <= ZERO_THRESHOLD) & (rows != 0)
        if tiny.any():
            rows = np.where(tiny, rows.dtype.type(0), rows)
        import tl2cgen  # only here: a worker whose library has the rows function never imports it

        scores = self._predictor().predict(tl2cgen.DMatrix(rows), pred_margin=True)
        return np.asarray(scores, dtype=np.float64).reshape(len(rows))


def _rows_function(library: ctypes.CDLL, name: str = ROWS_FUNCTION) -> Any:
    """The library's :data:`ROWS_FUNCTION` (or ``name``, :data:`ROWS64_FUNCTION`) with its C types, or None when it
    was published without one."""
    if not hasattr(library, name):
        return None
    function = getattr(library, name)
    function.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    function.restype = ctypes.c_int64
    return function


def _close(handle: int) -> None:
    import _ctypes

    if hasattr(_ctypes, "dlclose"):  # POSIX
        _ctypes.dlclose(handle)


def probe_rows(model_text: str, n_features: int, rows: int = PROBE_ROWS, seed: int = 0) -> np.ndarray:
    """(rows, n_features) float32 rows that exercise the booster's splits: each value is one of the model's
    thresholds for that feature, the float32 just below or above it, 0, NaN or a random normal value."""
    rng = np.random.default_rng(seed)
    thresholds: list[list[float]] = [[] for _ in range(n_features)]
    for features, values in zip(_FEATURE_LINE.findall(model_text), _THRESHOLD_LINE.findall(model_text),
                                strict=False):
        for feature, value in zip(features.split(), values.split(), strict=False):
            if 0 <= int(feature) < n_features:
                thresholds[int(feature)].append(float(value))
    probe = rng.normal(size=(rows, n_features)).astype(np.float32)
    for column, values in enumerate(thresholds):
        if not values:
            continue
        picked = np.asarray(values, dtype=np.float64)[rng.integers(0, len(values), rows)].astype(np.float32)
        side = rng.integers(0, 6, rows)
        moved = np.where(side == 1, np.nextafter(picked, np.float32(-np.inf)),
                         np.where(side == 2, np.nextafter(picked, np.float32(np.inf)), picked))
        probe[:, column] = np.where(side < 3, moved, np.where(side == 3, 0.0, np.where(side == 4, np.nan,
                                                                                    probe[:, column])))
    return probe


def stored_probe_scores(directory: Path, model_text: str, published: dict[str, Any] | None) -> np.ndarray | None:
    """LightGBM's scores of the probe rows as publishing stored them for this ``model_text``; None when the stage
    has none (published before they were stored), they belong to another text, or the file cannot be read or is
    not the one published."""
    published = published or {}
    name = published.get("probe")
    if not name or published.get("text_sha256") != text_digest(model_text):
        return None
    try:
        scores = np.load(directory / Path(name).name, allow_pickle=False)
    except (OSError, ValueError) as exc:
        logger.warning("%s: the stored probe scores cannot be read (%s); LightGBM checks the compiled ranker",
                       directory, exc)
        return None
    if scores.dtype != np.float64 or scores.shape != (PROBE_ROWS,) or (
            hashlib.sha256(scores.tobytes()).hexdigest() != published.get("probe_sha256")):
        logger.warning("%s: the stored probe scores are not those published; LightGBM checks the compiled ranker",
                       directory)
        return None
    return scores


def load_compiled(directory: Path, booster: Any, model_text: str, *, file: str = COMPILED_FILE,
                  published: dict[str, Any] | None = None) -> CompiledBooster | None:
    """The compiled library ``file`` in ``directory`` if it scores like ``booster`` (whose text is
    ``model_text``); None, with a log line, when it is missing (``published``: what the stage's metadata
    records of its compilation, for the reason), does not load or differs on :func:`probe_rows`.

    The probe rows' expected scores are those publishing stored (:data:`PROBE_FILE`) where they belong to
    ``model_text``: ``booster`` is then not used (a :class:`LazyBooster` stays unread); otherwise it scores them.
    """
    path = directory / file
    if not path.is_file():
        reason = (published or {}).get("error") or "published before rankers were compiled"
        logger.info("%s: no compiled ranker (%s); LightGBM scores", directory, reason)
        return None
    try:
        compiled = CompiledBooster(path)
        expected = stored_probe_scores(directory, model_text, published)
        probe = probe_rows(model_text, feature_count(model_text))
        if expected is None:
            expected = booster.predict(probe, num_threads=1)
        difference = float(np.abs(compiled.predict(probe) - expected).max())
        if compiled._rows64 is not None:  # an lleaves library's float64 entry: the same rows, as float64
            difference = max(difference, float(np.abs(compiled.predict(probe.astype(np.float64)) - expected).max()))
    except Exception as exc:  # noqa: BLE001  (another platform's library, a damaged file: LightGBM serves)
        logger.warning("%s: the compiled ranker does not load (%s); LightGBM scores instead", path, exc)
        return None
    if not difference <= TOLERANCE:
        logger.warning("%s: the compiled ranker scores probe rows up to %.3g away from its booster; LightGBM "
                       "scores instead", path, difference)
        return None
    return compiled


class LazyBooster:
    """A LightGBM booster read from its text on first use, by whichever thread needs it first.

    A worker whose compiled ranker passed its check against the stored probe scores scores every request without
    it, so it never imports LightGBM; every public attribute (``predict``, ``num_feature``, ...) is the booster's.
    """

    def __init__(self, model_text: str, make: Callable[[str], Any]) -> None:
        """``make``: builds the booster from the text (``lightgbm.Booster(model_str=...)``)."""
        self.model_text = model_text
        self._make = make
        self._booster: Any = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Whether the booster was read."""
        return self._booster is not None

    def get(self) -> Any:
        """The booster (read now if it was not)."""
        if self._booster is None:
            with self._lock:
                if self._booster is None:
                    self._booster = self._make(self.model_text)
        return self._booster

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.get(), name)
