"""Files written whole or not at all: a temporary file beside the target, renamed over it when complete.

``tempfile.mkstemp`` creates its file readable by its owner only (0600), and a rename keeps that mode: a
snapshot, a results file or ``models/ACTIVE`` written that way could not be read by another user (a web
server running as its own user, a shop's export job). The file here gets the mode ``open()`` would have
given it (0666 less the process's umask). Written by hand: the standard library has no atomic write,
and the packages that offered one are unmaintained.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    """The process's umask, read without changing it where Linux tells it (``/proc/self/status``); else by
    setting and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The permission bits ``open()`` gives a new file in this process (0666 less the umask)."""
    return 0o666 & ~_umask()


def default_dir_mode() -> int:
    """The permission bits ``mkdir()`` gives a new directory in this process (0777 less the umask); for a
    directory made by ``tempfile.mkdtemp`` (0700) before it is renamed into place."""
    return 0o777 & ~_umask()


@contextmanager
def atomic_file(path: Path | str) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that needs a file name (``DataFrame.to_parquet``); renamed
    over ``path`` (mode as ``open()`` gives) when the block ends without an error, removed otherwise."""
    path = Path(path)
    if path.is_dir():  # the rename would fail only after the writer's work, leaving its file beside the folder
        raise IsADirectoryError(f"{path} is a folder, not a file to write")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, default_file_mode())  # after the writer: one that recreated the file gets the same bits
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_write(path: Path | str, mode: str = "w", *, encoding: str | None = "utf-8",
                 newline: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing (:func:`atomic_file`): it replaces ``path`` when the
    block ends without an error; on an error it is removed and ``path`` is untouched.

    Args:
        path: the file to write (its directory must exist).
        mode: "w" (text) or "wb" (bytes).
        encoding, newline: as ``open()``'s, for text.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    text = {"encoding": encoding, "newline": newline} if mode == "w" else {}
    with atomic_file(path) as tmp, open(tmp, mode, **text) as handle:
        yield handle


def blocking_file(path: Path | str) -> Path | None:
    """The first of ``path``'s folders that exists but is no folder (a file where a folder is needed), or None.

    ``mkdir`` says only "File exists" then, which reads as if the file to write were in the way."""
    for folder in reversed(Path(path).parents):
        if folder.exists() and not folder.is_dir():
            return folder
    return None
