"""Exception family of the ``modeling`` package."""

from __future__ import annotations


class ModelingError(Exception):
    """Base class of every error raised on purpose by ``modeling``."""


class DataValidationError(ModelingError):
    """An input file or table is malformed.

    The message names the file, the line (1-based, where known) and the problem.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}"
            if line is not None:
                where += f", line {line}"
            where += ": "
        super().__init__(f"{where}{message}")


class StoredDataError(DataValidationError):
    """A row of the database's own tables that an earlier version stored and this one refuses (a migration of this
    version mends it): not something to import again."""


class ArtifactError(ModelingError):
    """A model bundle or embeddings directory is missing, incomplete or incompatible."""


class IncompatibleBundleError(ArtifactError):
    """A model bundle written by another version of the service (another bundle format, or a ranking stage that
    reads other features): whole, but this version cannot serve it; a new model must be trained."""


class TrainingError(ModelingError):
    """Training cannot run on the given data (too few users, items or interactions)."""
