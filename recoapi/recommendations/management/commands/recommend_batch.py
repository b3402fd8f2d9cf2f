"""Batch predictions: top-k for every shopper id of a file, written as CSV."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm.auto import tqdm

from modeling.atomic import atomic_write, blocking_file
from modeling.sources._files import undecodable_line
from recoapi.exceptions import ApplicationError
from recoapi.recommendations.services import batch_setting, model_load, recommendation_batch

HEADER = ("user_id", "rank", "item_id", "score")
# A first line holding one of these (any case, surrounding spaces) is a column header, not a shopper.
HEADER_NAMES = frozenset({"user_id", "user", "users"})
FORBIDDEN: tuple[tuple[str, str], ...] = ((",", "a comma"), ("\n", "a line break"), ("\r", "a line break"),
                                          ("\x00", "a NUL character"))
"""What a quoted value may hold but no shopper id does (the API's ``users=a,b`` lists ids separated by commas)."""


def _read_ids(path: Path, chunk: int) -> Iterator[list[str]]:
    """Shopper ids, one per line, in chunks.

    Blank lines are skipped, and so is a header on the first line (``user_id``, in any case,
    with surrounding spaces or a UTF-8 byte order mark, as spreadsheet exports write it).

    Raises:
        CommandError: naming its line, a line of more than one value (empty fields past the first aside), an id
            longer than 128 characters or holding what no shopper id holds (a comma, a line break, a NUL: the API
            refuses them); a file that is not UTF-8 text or cannot be read.
    """
    batch: list[str] = []
    number = 0
    reader = None
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            ended = 0  # the file's line the last row ended on (a quoted value may span several)
            for number, row in enumerate(reader, start=1):
                line, ended = ended + 1, reader.line_num  # where this row begins
                value = row[0].strip() if row else ""
                if any(field.strip() for field in row[1:]):
                    raise CommandError(f"{path}, line {line}: {len(row)} values, where a line holds one shopper id "
                                       "(a shopper id holds no comma)")
                if not value or (number == 1 and value.lower() in HEADER_NAMES):
                    continue
                if len(value) > 128:
                    raise CommandError(f"{path}, line {line}: a shopper id is at most 128 characters")
                refused = next((what for char, what in FORBIDDEN if char in value), None)
                if refused:
                    raise CommandError(f"{path}, line {line}: {value[:40]!r} holds {refused}, which no shopper id "
                                       "holds (the API refuses it)")
                batch.append(value)
                if len(batch) >= chunk:
                    yield batch
                    batch = []
    except UnicodeDecodeError as exc:  # the reader decodes ahead of the rows: find the line in the bytes
        raise CommandError(f"{path}, line {undecodable_line(path) or 1}: not UTF-8 text ({exc.reason})") from exc
    except csv.Error as exc:  # a record may span lines (a quoted newline): the reader counts physical lines
        raise CommandError(f"{path}, line {reader.line_num if reader is not None else number + 1}: {exc}") from exc
    except OSError as exc:
        raise CommandError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if batch:
        yield batch


class Command(BaseCommand):
    help = ("Write the top-k recommendations of every shopper listed in --input (one id per line) to --output "
            "as CSV rows user_id,rank,item_id,score. Unknown shoppers get popular products; repeated ids are "
            "answered once.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--input", required=True, help="File with one shopper id per line.")
        parser.add_argument("--output", required=True,
                            help="CSV file to write (replaced atomically; missing folders are made).")
        parser.add_argument("--k", type=int, default=10, help="Recommendations per shopper (1-100).")
        parser.add_argument("--chunk-size", type=int, default=1000, help="Shoppers scored per step.")

    def handle(self, *args: Any, **options: Any) -> None:
        source, target = Path(options["input"]), Path(options["output"])
        if source.is_dir():
            raise CommandError(f"--input {source} is a folder; give the file with one shopper id per line")
        if not source.is_file():
            if source.exists():  # a device or a pipe: the ids are read twice (counted first, for the progress bar)
                raise CommandError(f"--input {source} is not a regular file; write the shopper ids to a file first")
            raise CommandError(f"{source}: no such file")
        if target.is_dir():
            raise CommandError(f"--output {target} is a folder; give the path of the CSV file to write")
        blocked = blocking_file(target)
        if blocked is not None:
            raise CommandError(f"--output {target}: {blocked} is a file, not a folder")
        if not 1 <= options["k"] <= 100:
            raise CommandError(f"--k must be between 1 and 100, got {options['k']}")
        if options["chunk_size"] < 1:
            raise CommandError("--chunk-size must be at least 1")
        total = sum(len(ids) for ids in _read_ids(source, options["chunk_size"]))
        try:
            # Loaded before the progress bar starts, so the bar measures shoppers, not start-up.
            version = model_load()
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        setting = batch_setting()  # read once: one file, one setting, whatever happens meanwhile
        if options["verbosity"] >= 2:
            self.stdout.write(f"Model {version} loaded; {total} shopper ids to answer.")
        users = rows_written = 0
        versions: set[str] = set()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(target, newline="") as handle, tqdm(
                total=total, unit="shopper", desc="recommend", disable=options["verbosity"] == 0
            ) as bar:
                writer = csv.writer(handle)
                writer.writerow(HEADER)
                done: set[str] = set()
                for chunk in _read_ids(source, options["chunk_size"]):
                    ids = [i for i in dict.fromkeys(chunk) if i not in done]
                    done.update(ids)
                    bar.update(len(chunk) - len(ids))
                    if not ids:
                        continue
                    try:
                        version, rows = recommendation_batch(user_ids=ids, k=options["k"], setting=setting)
                    except OSError as exc:  # not the output's fault: the model's files (the handler below is)
                        raise CommandError(f"the model could not be read: {exc}") from exc
                    versions.add(version)
                    writer.writerows(rows)
                    users += len(ids)
                    rows_written += len(rows)
                    bar.update(len(ids))
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        except OSError as exc:  # the folder cannot be made, or the file not written (nothing is left half-written)
            raise CommandError(f"cannot write {target}: {exc.strerror or exc}") from exc
        if not users:
            self.stdout.write(self.style.WARNING(f"{source} holds no shopper ids: wrote only the header to {target}."))
            return
        self.stdout.write(self.style.SUCCESS(
            f"Wrote {rows_written} rows for {users} shoppers to {target} (model {', '.join(sorted(versions))})."))
