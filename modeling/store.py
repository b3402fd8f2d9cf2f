"""A model store shared by several API hosts: a directory every host mounts (NFS, a shared volume).

Its layout is that of ``models/``: one folder per bundle version, and ``text_encoder/`` with the ONNX text
encoder exports the bundles name. Each host keeps its own ``models/`` as a local cache of the store.

- :meth:`DirectoryStore.publish` copies a local bundle (and the text export it names) into the store: into
  a temporary folder first, with a :data:`CHECKSUM_FILE` of every file's SHA-256, then renamed, so a host
  never sees half a bundle.
- :meth:`DirectoryStore.fetch` copies a version from the store into a host's cache the same way and checks
  every file against the checksums before the rename; a copy that does not match is refused.
- :func:`verify` checks a local copy against its checksums (a host loads nothing that does not match).

This is one small interface (``versions``, ``has``, ``publish``, ``fetch``, ``remove``) so that an object store could
stand behind it; only the shared directory is implemented.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from modeling import artifacts
from modeling.errors import ArtifactError

logger = logging.getLogger(__name__)

CHECKSUM_FILE = "checksums.json"
REMOVED_DIR = ".removed"
"""Where the store records the versions removed from it (one empty file per version)."""
CHUNK = 1 << 20


def file_checksums(directory: Path) -> dict[str, str]:
    """SHA-256 of every file under ``directory`` (relative POSIX path -> hex digest), except the checksum file."""
    out = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.name != CHECKSUM_FILE:
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                while chunk := handle.read(CHUNK):
                    digest.update(chunk)
            out[path.relative_to(directory).as_posix()] = digest.hexdigest()
    return out


def verify(directory: Path) -> list[str]:
    """What differs between ``directory`` and its :data:`CHECKSUM_FILE` (empty: it matches).

    A folder without a checksum file cannot be verified and is reported as such.
    """
    try:
        expected = json.loads((directory / CHECKSUM_FILE).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError) as exc:
        return [f"{directory.name}: no readable {CHECKSUM_FILE} ({exc.__class__.__name__})"]
    actual = file_checksums(directory)
    problems = [f"{name}: missing" for name in sorted(set(expected) - set(actual))]
    problems += [f"{name}: not in the checksums" for name in sorted(set(actual) - set(expected))]
    problems += [f"{name}: checksum differs" for name in sorted(set(expected) & set(actual))
                 if expected[name] != actual[name]]
    return problems


def _checksums(directory: Path) -> dict[str, str] | None:
    try:
        return json.loads((directory / CHECKSUM_FILE).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError):
        return None


def _text_folder(bundle_dir: Path) -> str | None:
    """The text export folder a bundle names, relative to its models directory."""
    try:
        manifest = json.loads((bundle_dir / artifacts.MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{bundle_dir.name}: unreadable manifest ({exc.__class__.__name__})") from exc
    text = manifest.get("text_encoder")
    return None if text is None else str(text["path"])


def _copy_checked(source: Path, target: Path, *, write_checksums: bool) -> None:
    """Copy the folder ``source`` to ``target`` through a temporary sibling and a rename.

    ``write_checksums``: compute the checksums of the copy and write them (publishing); otherwise check the
    copy against the checksums that came with it (fetching). Nothing is left at ``target`` on any failure;
    a ``target`` that exists already is kept (another process got there first).

    Raises:
        ArtifactError: the source cannot be read, or the copy does not match its checksums.
    """
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        os.chmod(tmp, 0o755)
        if write_checksums:
            (tmp / CHECKSUM_FILE).write_text(json.dumps({"files": file_checksums(tmp)}, indent=1, sort_keys=True),
                                             encoding="utf-8")
        else:
            problems = verify(tmp)
            if problems:
                raise ArtifactError(f"the copy of {source.name} does not match its checksums: "
                                    f"{'; '.join(problems[:5])}")
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.exists():
                raise
    except OSError as exc:
        raise ArtifactError(f"cannot copy {source.name}: {exc.__class__.__name__}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class DirectoryStore:
    """Bundles in a directory that every host mounts (see the module docstring)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def reachable(self) -> bool:
        """Whether the store's directory is there (an unmounted share is not)."""
        return self.root.is_dir()

    def unreachable(self) -> ArtifactError:
        """The error of a store that cannot be reached, saying why: its folder does not exist (the store is
        never created: a missing folder is more often a share that is not mounted), is not a folder, or
        cannot be looked at."""
        try:
            self.root.stat()
        except FileNotFoundError:
            why = "the folder does not exist (create it, or mount the share, on every host)"
        except OSError as exc:
            why = exc.strerror or exc.__class__.__name__
        else:
            why = "it is not a folder"
        return ArtifactError(f"the model store {self.root} cannot be reached: {why}")

    def require_reachable(self) -> None:
        """Raise :meth:`unreachable`'s error where the store cannot be reached (:meth:`reachable`)."""
        if not self.reachable():
            raise self.unreachable()

    def versions(self) -> list[str]:
        """Complete versions in the store, oldest first.

        Raises:
            ArtifactError: the store cannot be reached.
        """
        self.require_reachable()
        return artifacts.list_versions(self.root)

    def has(self, version: str) -> bool:
        """Whether the store holds a complete copy of ``version``."""
        return artifacts.is_version_name(version) and (self.root / version / CHECKSUM_FILE).is_file()

    def manifest(self, version: str) -> dict[str, Any]:
        """A stored version's manifest.

        Raises:
            ArtifactError: no such version, or the store cannot be reached.
        """
        try:
            return json.loads((self.root / version / artifacts.MANIFEST_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            if not self.reachable():
                raise self.unreachable() from exc
            raise ArtifactError(f"model {version} is not in the model store {self.root} "
                                f"({exc.__class__.__name__})") from exc

    def publish(self, bundle_dir: Path) -> None:
        """Copy a local bundle (and the text export it names) into the store, with checksums; a version the
        store has already is left as it is.

        Raises:
            ArtifactError: the store cannot be reached or written.
        """
        self.require_reachable()
        text = _text_folder(bundle_dir)
        if text is not None:
            _copy_checked(bundle_dir.parent / text, self.root / text, write_checksums=True)
        stored = self.root / bundle_dir.name
        if stored.exists() and file_checksums(bundle_dir) != _checksums(stored):
            raise ArtifactError(f"the store holds another bundle named {bundle_dir.name} (two hosts published "
                                "within the same second?): not replaced")
        _copy_checked(bundle_dir, stored, write_checksums=True)
        if not (bundle_dir / CHECKSUM_FILE).is_file():  # the local copy is verified like a fetched one
            shutil.copyfile(self.root / bundle_dir.name / CHECKSUM_FILE, bundle_dir / CHECKSUM_FILE)
        logger.info("model %s published to the store %s", bundle_dir.name, self.root)

    def remove(self, version: str) -> bool:
        """Delete ``version`` from the store (its text export, which other bundles share, stays); whether it
        was there. A record of the removal is left in ``.removed/``, so hosts stop listing their cached copies
        (:meth:`removed`).

        Raises:
            ArtifactError: the store cannot be reached or the folder cannot be removed.
        """
        self.require_reachable()
        if not artifacts.is_version_name(version):
            raise ArtifactError(f"not a model version: {version!r}")
        tombstone = self.root / REMOVED_DIR / version
        try:  # first: a host that lists versions meanwhile already hides its cached copy
            tombstone.parent.mkdir(exist_ok=True)
            tombstone.touch()
        except OSError as exc:
            raise ArtifactError(f"the model store cannot record the removal of {version}: {exc.strerror}") from exc
        return artifacts.remove_bundle(self.root, version)

    def removed(self, version: str) -> bool:
        """Whether ``version`` was removed from the store (:meth:`remove`): hosts' cached copies are not listed."""
        return artifacts.is_version_name(version) and (self.root / REMOVED_DIR / version).is_file()

    def fetch(self, version: str, models_dir: Path) -> Path:
        """Copy ``version`` (and its text export) into ``models_dir`` unless it is there; returns its folder.

        Raises:
            ArtifactError: not in the store, the store cannot be reached, or the copy does not match.
        """
        target = Path(models_dir) / version
        if target.exists():
            return target
        if not self.has(version):
            if not self.reachable():
                raise ArtifactError(f"model {version} cannot be fetched: {self.unreachable()}")
            raise ArtifactError(f"model {version} is not in the model store {self.root}")
        text = _text_folder(self.root / version)
        if text is not None:
            _copy_checked(self.root / text, Path(models_dir) / text, write_checksums=False)
        _copy_checked(self.root / version, target, write_checksums=False)
        logger.info("model %s fetched from the store into %s", version, models_dir)
        return target
