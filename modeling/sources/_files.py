"""Reading source files with errors that name the file and the line."""

from __future__ import annotations

import csv
import gzip
import json
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from modeling import datasets as ds
from modeling.errors import DataValidationError

FIELD_SIZE_LIMIT = 2**31 - 1
"""The longest field the row scans read (the csv module's own limit, 131,072 characters, refused a long product
description pandas reads)."""
_QUOTES_HINT = " (a value that holds {sep} needs quotes)"
"""Said of a row with more fields than the header: most often a value with the separator in it, unquoted."""

# What reading a damaged, truncated or mis-encoded (possibly gzipped) file raises.
_READ_ERRORS = (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile, zlib.error)

def open_text(path: Path, encoding: str = "utf-8") -> IO[str]:
    """Open a text file, transparently decompressing ``.gz``."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding=encoding)
    return open(path, encoding=encoding)


def json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any], str]]:
    """Yield ``(line_number, record, stripped_line)`` for each non-blank line of a JSON-lines file (.gz too)."""
    try:
        with open_text(path) as handle:
            for number, raw in enumerate(handle, start=1):
                line = raw.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataValidationError(
                        f"not valid JSON ({exc.msg} at column {exc.colno})", path=str(path), line=number
                    ) from exc
                if not isinstance(record, dict):
                    raise DataValidationError("expected a JSON object", path=str(path), line=number)
                yield number, record, line
    except UnicodeDecodeError as exc:
        raise not_text(path, exc) from exc
    except _READ_ERRORS as exc:
        raise DataValidationError(f"cannot read file ({exc})", path=str(path)) from exc


def require_field(record: dict[str, Any], name: str, kinds: tuple[type, ...], path: Path, line: int) -> Any:
    """``record[name]`` checked for presence and type."""
    if name not in record or record[name] is None:
        raise DataValidationError(f"missing required field {name!r}", path=str(path), line=line)
    value = record[name]
    if not isinstance(value, kinds) or isinstance(value, bool):
        expected = " or ".join(k.__name__ for k in kinds)
        raise DataValidationError(
            f"field {name!r} must be {expected}, got {type(value).__name__} {value!r}", path=str(path), line=line
        )
    return value


def read_table(
    path: Path,
    *,
    columns: list[str],
    required: list[str],
    sep: str = ",",
    header: bool = True,
    names: list[str] | None = None,
    encoding: str = "utf-8",
) -> pd.DataFrame:
    """Read a delimited text file as strings, checking that the required columns exist.

    Args:
        path: the file (``.gz`` allowed).
        columns: columns to keep (those absent and not required are simply missing).
        required: columns that must be present.
        sep: field separator.
        header: whether the first line names the columns; otherwise ``names`` gives them.
        encoding: text encoding.

    Returns:
        DataFrame of str (missing values as ""), one row per data line (blank lines, and rows whose every field is
        empty, are skipped; fields past the header's are dropped when empty, a spreadsheet's trailing separator);
        ``frame.attrs["first_line"]`` is the line number of the first data row and
        ``frame.attrs["layout"]`` how the file was read, so that :func:`row_error` can name a row's
        own line, also after blank lines or quoted fields that span lines; ``frame.attrs["unread_columns"]``
        the file's columns not in ``columns``.
    """
    if not path.is_file():
        raise DataValidationError("file not found", path=str(path))
    quoting = csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL
    try:
        try:
            frame, longer = _read_csv(path, sep, header, names, encoding, quoting)
        except pd.errors.ParserError:  # a row longer than the header: fine when what it adds is empty
            width = len(header_names(path, sep, quoting, encoding)) if header else len(names or [])
            # (a scan that cannot tell raises _RowScanError: refused, as below, with _malformed_row's words)
            if not width or _overlong_row(path, sep, quoting, encoding, header, width) is not None:
                raise
            frame, longer = _read_csv(path, sep, header, names, encoding, quoting, usecols=list(range(width)))
    except pd.errors.EmptyDataError as exc:
        raise DataValidationError("file is empty", path=str(path)) from exc
    except (pd.errors.ParserError, _RowScanError) as exc:
        line, problem = _malformed_row(path, sep, quoting, encoding, header) or (None, f"({str(exc).strip()})")
        raise DataValidationError(f"cannot parse {problem}{_separator_hint(path, sep)}",
                                  path=str(path), line=line) from exc
    except UnicodeDecodeError as exc:
        raise not_text(path, exc, encoding) from exc
    except _READ_ERRORS as exc:
        raise DataValidationError(f"cannot read file ({exc})", path=str(path)) from exc
    if longer:  # pandas dropped the fields past the header's: refuse unless they were all empty
        width = len(frame.columns)
        try:
            found = _overlong_row(path, sep, quoting, encoding, header, width)
        except _RowScanError as exc:  # the scan cannot tell whether what was dropped was empty: refused
            raise DataValidationError(f"cannot parse the row: {exc}", path=str(path), line=exc.line) from exc
        if found is not None:
            line, fields = found
            raise DataValidationError(f"cannot parse {_longer_row(fields, width, header, sep, quoting)}"
                                      f"{_separator_hint(path, sep)}", path=str(path), line=line)
    frame = _without_empty_rows(frame)
    if header:
        named = [name.strip() for name in header_names(path, sep, quoting, encoding)]
        repeated = sorted({name for name in named if name and named.count(name) > 1})
        if repeated:  # pandas would rename the second "price" to "price.1" and read only the first
            raise DataValidationError(f"the header names column(s) {', '.join(map(repr, repeated))} more than once",
                                      path=str(path), line=1)
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataValidationError(
            f"missing required column(s) {', '.join(missing)}; found {', '.join(frame.columns)}"
            f"{_separator_hint(path, sep)}", path=str(path)
        )
    if len(frame) == 0:
        raise DataValidationError("file has no data rows", path=str(path))
    unread = [c for c in frame.columns if c not in columns and not c.startswith("Unnamed: ")]  # "a,b," names no 3rd
    frame = frame[[c for c in columns if c in frame.columns]]
    frame.attrs["unread_columns"] = unread
    frame.attrs["first_line"] = 2 if header else 1
    frame.attrs["layout"] = {"path": str(path), "sep": sep, "header": header, "encoding": encoding,
                             "quoting": quoting, "skips_empty_rows": True}
    return frame


def _read_csv(path: Path, sep: str, header: bool, names: list[str] | None, encoding: str, quoting: int,
              usecols: list[int] | None = None) -> tuple[pd.DataFrame, bool]:
    """``(the file's rows as strings, whether a row had more fields than the header)``.

    The first column is never taken as the index: on its own, pandas does that when the first data row has one
    field more than the header (a comma in a value without quotes, a spreadsheet's trailing comma), and every
    column then reads its neighbour's values without any error. Here such fields are dropped with a warning,
    which the caller turns into a refusal unless they were empty."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        frame = pd.read_csv(
            path, sep=sep, header=0 if header else None, names=names, dtype=str, keep_default_na=False,
            encoding=encoding, engine="c", skip_blank_lines=True, quoting=quoting, index_col=False, usecols=usecols,
        )
    return frame, any(issubclass(warning.category, pd.errors.ParserWarning) for warning in caught)


def _overlong_row(path: Path, sep: str, quoting: int, encoding: str, header: bool,
                  width: int) -> tuple[int, int] | None:
    """``(line, fields)`` of the first data row with a non-empty field past the first ``width``; None when every
    longer row only adds empty fields.

    Raises:
        _RowScanError: the file cannot be scanned (a row the csv module cannot read), so whether the fields past
            ``width`` are empty cannot be told (it is also raised for a file that cannot be read again).
    """
    try:
        rows = _rows(path, sep, quoting, encoding)
        if header:
            next(rows, None)
        for start, record in rows:
            if len(record) > width and any(field.strip() for field in record[width:]):
                return start, len(record)
    except _READ_ERRORS as exc:
        raise _RowScanError(1, csv.Error(f"cannot read the file again ({exc})")) from exc
    return None


def _longer_row(fields: int, width: int, header: bool, sep: str, quoting: int) -> str:
    """What is wrong with a row of ``fields`` fields whose values go past the ``width`` columns: the same words
    wherever it is found (the quotes hint only where quotes are read: not in tab-separated files)."""
    named = "the header names" if header else "the file's columns are"
    hint = _QUOTES_HINT.format(sep=repr(sep)) if quoting != csv.QUOTE_NONE else ""
    return f"the row: {fields} fields, but {named} {width}{hint}"


def _without_empty_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` without the rows whose every field is empty (a spreadsheet's ``,,,`` lines), which are no data,
    as blank lines are not (:func:`_rows` skips both, so rows keep their lines)."""
    if len(frame.columns) == 0 or len(frame) == 0:
        return frame
    empty = frame.iloc[:, 0].to_numpy() == ""
    if not empty.any():
        return frame
    for column in range(1, len(frame.columns)):
        empty &= frame.iloc[:, column].to_numpy() == ""
    if not empty.any():
        return frame
    return frame[~empty].reset_index(drop=True)


def header_names(path: Path, sep: str, quoting: int, encoding: str) -> list[str]:
    """The names of the first line of a file pandas has read (so it exists and decodes), as the csv module reads
    them."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding=encoding, newline="") as handle:
        for row in csv.reader(handle, delimiter=sep, quoting=quoting):
            if any(cell.strip() for cell in row):
                return row
    return []


def unread_note(frame: pd.DataFrame, path: Path, read: list[str]) -> list[str]:
    """A note naming the columns of ``frame``'s file that were not read (a misspelt ``categroy`` would leave every
    product without a category), with the ``read`` ones; none when every column was read."""
    unread = frame.attrs.get("unread_columns") or []
    if not unread:
        return []
    shown = ", ".join(repr(name) for name in unread[:10])
    if len(unread) > 10:
        shown += f" and {len(unread) - 10} more"
    return [f"{path.name}: column(s) {shown} not read; the columns this source reads are {', '.join(read)}"]


def whole_numbers(values: pd.Series) -> pd.Series:
    """Text values with whole numbers written as integers (``"1000.0"`` -> ``"1000"``, as pandas writes a column of
    integers with a gap); every other value as it is."""
    return values.str.replace(r"^(-?\d+)\.0*$", r"\1", regex=True)


def check_ids(frame: pd.DataFrame, values: pd.Series | np.ndarray, column: str, path: Path) -> None:
    """Raise, naming its line, for the first of (n,) ids ``values`` (a column of ``frame``'s rows, stripped) that is
    empty or missing, or holds a comma (:data:`modeling.datasets.ID_COMMA_MESSAGE`)."""
    text = np.asarray(values, dtype=object)
    missing = np.asarray(pd.isna(values), dtype=bool)
    empty = missing | (text == "")
    comma = ~missing & np.fromiter((isinstance(v, str) and "," in v for v in text), dtype=bool, count=len(text))
    if empty.any() and (not comma.any() or np.argmax(empty) < np.argmax(comma)):
        raise row_error(frame, empty, f"column {column!r} is empty", path)
    if comma.any():
        raise row_error(frame, comma, f"column {column!r}: {text[np.argmax(comma)]!r}: {ds.ID_COMMA_MESSAGE}", path)


def repeated_products(items: pd.DataFrame, raw: pd.DataFrame, path: Path) -> np.ndarray:
    """Which rows of ``items`` repeat an earlier row of the same product exactly (to be read once).

    A product listed twice with different values is refused: which row describes it is the shop's to say, and
    keeping either one silently would serve a price or title the shop may have corrected.

    Args:
        items: the catalogue rows as they will be imported (ids stripped, texts cleaned), in the order of ``raw``.
        raw: the file's rows as :func:`read_table` read them (for the line numbers).
        path: the file, for the message.

    Returns:
        (n,) bool mask of the repeated rows.

    Raises:
        DataValidationError: a product on two rows whose values differ, naming both lines.
    """
    ids = items[ds.ITEM_ID]
    again = ids.duplicated(keep="first").to_numpy()  # a product met on an earlier row
    if not again.any():
        return again
    # Missing values compare equal to each other here (an empty price on both rows is the same price).
    values = items.astype(object).where(items.notna(), None)
    repeated = values.duplicated(keep="first").to_numpy()
    differing = again & ~repeated
    if differing.any():
        second = int(np.flatnonzero(differing)[0])
        product = ids.iloc[second]
        first = int(np.flatnonzero((ids == product).to_numpy())[0])
        columns = [column for column in items.columns
                   if column != ds.ITEM_ID and values[column].iloc[first] != values[column].iloc[second]]
        raise DataValidationError(
            f"product {product!r} is listed on line {row_line(raw, first)} and again with a different "
            f"{' and '.join(repr(c) for c in columns)}: keep one row per product",
            path=str(path), line=row_line(raw, second))
    return repeated


def row_error(frame: pd.DataFrame, mask: np.ndarray | pd.Series, message: str, path: Path) -> DataValidationError:
    """An error with ``message`` naming the file line of the first row where ``mask`` is true."""
    position = int(np.flatnonzero(np.asarray(mask))[0])
    return DataValidationError(message, path=str(path), line=row_line(frame, position))


def file_row_line(path: Path, position: int, *, sep: str = ",", header: bool = True, encoding: str = "utf-8") -> int:
    """The line of ``path`` where data row ``position`` (0-based) starts, for a file not read by :func:`read_table`
    (blank lines and quoted fields over several lines counted; the row's place after the header when the file
    cannot be read again)."""
    layout = {"path": str(path), "sep": sep, "header": header, "encoding": encoding, "quoting": csv.QUOTE_MINIMAL}
    line = _row_line(layout, position)
    return line if line is not None else position + (2 if header else 1)


def row_line(frame: pd.DataFrame, position: int) -> int:
    """The file line where data row ``position`` (0-based) of a :func:`read_table` frame starts."""
    layout = frame.attrs.get("layout")
    line = _row_line(layout, position) if layout else None
    return line if line is not None else frame.attrs.get("first_line", 2) + position


class _RowScanError(Exception):
    """A row the csv module cannot read, at ``line`` (where the row starts)."""

    def __init__(self, line: int, error: csv.Error) -> None:
        super().__init__(str(error))
        self.line = line


def _rows(path: Path, sep: str, quoting: int, encoding: str, *, strict: bool = False,
          skip_empty: bool = True) -> Iterator[tuple[int, list[str]]]:
    """The file's rows as pandas reads them, each with the line it starts on: blank (or white-space-only) lines
    are not rows, and a quoted field may span several lines; with ``skip_empty``, neither is a row of empty fields
    only (``,,,``), as :func:`read_table` drops those.

    Raises:
        _RowScanError: a row the csv module cannot read (with ``strict``, also a malformed quote).
        OSError and the other read errors of :func:`open_text`.
    """
    csv.field_size_limit(max(csv.field_size_limit(), FIELD_SIZE_LIMIT))  # pandas reads fields of any length
    with open_text(path, encoding=encoding) as handle:
        reader = csv.reader(handle, delimiter=sep, quoting=quoting, strict=strict)
        previous_end = 0
        while True:
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise _RowScanError(previous_end + 1, exc) from exc
            start, previous_end = previous_end + 1, reader.line_num
            if record and not (len(record) == 1 and not record[0].strip()) and (any(record) or not skip_empty):
                yield start, record


def _malformed_row(path: Path, sep: str, quoting: int, encoding: str, header: bool) -> tuple[int, str] | None:
    """The line and problem of the first row pandas could not parse: more fields than the first row, or a
    quoted field still open at the end of the file (pandas' own message counts rows, not lines). None when
    the scan finds neither."""
    expected = None
    try:
        for start, record in _rows(path, sep, quoting, encoding, strict=True):
            if expected is None:
                expected = len(record)
            elif len(record) > expected and any(field.strip() for field in record[expected:]):
                return start, _longer_row(len(record), expected, header, sep, quoting)
    except _RowScanError as exc:
        if "unexpected end of data" in str(exc):
            return exc.line, "the row: a quoted field is not closed (a '\"' is missing)"
        return exc.line, f"the row: {exc}"
    except _READ_ERRORS:
        return None
    return None


def _row_line(layout: dict[str, Any], position: int) -> int | None:
    """The file line where data row ``position`` (0-based, as :func:`read_table` numbered it) starts (see
    :func:`_rows`). Only called for an error, so the scan costs nothing otherwise. None when the file cannot be
    read again or has fewer rows."""
    try:
        rows = _rows(Path(layout["path"]), layout["sep"], layout["quoting"], layout["encoding"],
                     skip_empty=layout.get("skips_empty_rows", False))
        for row, (start, _) in enumerate(rows, start=-1 if layout["header"] else 0):
            if row == position:
                return start
    except (*_READ_ERRORS, _RowScanError):
        return None
    return None


def _bad_row(frame: pd.DataFrame, mask: np.ndarray, column: str, expected: str, path: Path) -> DataValidationError:
    value = frame[column].iloc[int(np.flatnonzero(mask)[0])]
    return row_error(frame, mask, f"column {column!r}: {value!r} is not {expected}", path)


INT_LIMIT = 1e18
"""Integers read from files are below this in magnitude (18 digits): an int64 holds them, a float64 reads them
exactly enough to tell, and no id, count or time a shop writes is larger."""


def to_int(frame: pd.DataFrame, column: str, path: Path, *,
           rule: tuple[Callable[[np.ndarray], np.ndarray], str] | None = None) -> np.ndarray:
    """Column as int64; the first value that is not an integer, or breaks ``rule`` (see :func:`to_float`), raises
    with its line."""
    numbers = pd.to_numeric(frame[column].str.strip(), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    finite = np.isfinite(numbers)
    bad = ~finite
    # Beyond 18 digits a value no longer fits an int64 (1e30 would become -9223372036854775808): refused too.
    bad[finite] = (numbers[finite] != np.floor(numbers[finite])) | (np.abs(numbers[finite]) >= INT_LIMIT)
    _raise_first(frame, column, path, numbers, bad, ~bad, rule, "an integer of at most 18 digits",
                 lambda value: f"{int(value)}")
    return numbers.astype(np.int64)


def _raise_first(frame: pd.DataFrame, column: str, path: Path, numbers: np.ndarray, bad: np.ndarray,
                 checked: np.ndarray, rule: tuple[Callable[[np.ndarray], np.ndarray], str] | None, expected: str,
                 shown: Callable[[float], str]) -> None:
    """Raise for the first row of (n,) ``bad`` (not ``expected``) or of the ``checked`` ``numbers`` (all (n,)) that
    break ``rule`` (``(valid, what)``), whichever comes first in the file; nothing when every row is fine."""
    broken = np.zeros(len(numbers), dtype=bool)
    if rule is not None:
        broken[checked] = ~np.asarray(rule[0](numbers[checked]), dtype=bool)
    if broken.any() and (not bad.any() or np.argmax(broken) < np.argmax(bad)):
        assert rule is not None
        raise row_error(frame, broken, f"column {column!r}: {shown(numbers[np.argmax(broken)])} {rule[1]}", path)
    if bad.any():
        raise _bad_row(frame, bad, column, expected, path)


def to_float(frame: pd.DataFrame, column: str, path: Path, *, allow_empty: bool = False,
             rule: tuple[Callable[[np.ndarray], np.ndarray], str] | None = None) -> np.ndarray:
    """Column as float64 (empty -> NaN when ``allow_empty``); the first bad value raises with its line.

    ``rule``: ``(valid, what)``, where ``valid`` maps the numbers (n,) to (n,) bool and ``what`` says what an invalid
    one is (``"is negative"``); the first row that is not a number or breaks the rule is the one named.
    """
    text = frame[column].str.strip()
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    empty = (text == "").to_numpy()
    bad = ~np.isfinite(values) & ~(empty & allow_empty)
    # An allowed empty value is NaN: neither bad nor checked by the rule.
    _raise_first(frame, column, path, values, bad, np.isfinite(values), rule, "a number", str)
    return values


def to_unix_seconds(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """Column of unix seconds or ISO 8601 date-times as int64 seconds (UTC)."""
    text = frame[column].str.strip()
    numeric = pd.to_numeric(text, errors="coerce")
    result = numeric.to_numpy(dtype=float, na_value=np.nan).copy()
    need = np.isnan(result)
    if need.any():
        parsed = pd.to_datetime(text[need], errors="coerce", utc=True, format="ISO8601")
        # The epoch in the parsed unit: in nanoseconds it would overflow for dates after 2262 or before 1677.
        epoch = pd.Timestamp(0, tz="UTC").as_unit(parsed.dt.unit)
        seconds = (parsed - epoch) // pd.Timedelta(seconds=1)
        result[need] = seconds.to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isfinite(result) | (np.abs(np.nan_to_num(result)) >= INT_LIMIT)  # inf and 1e30 are no time either
    if bad.any():
        raise _bad_row(frame, bad, column, "a unix time in seconds or an ISO 8601 date-time", path)
    return result.astype(np.int64)


def _separator_hint(path: Path, sep: str) -> str:
    """A hint when the file's first line looks separated by another character than ``sep`` ("" otherwise)."""
    try:
        with open_text(path, encoding="latin-1") as handle:
            first = handle.readline()
    except _READ_ERRORS:
        return ""
    for other, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "vertical bars")):
        if other != sep and first.count(other) > first.count(sep):
            return f"; the first line is separated by {name}, and this source reads {sep!r}-separated files"
    return ""


def not_text(path: Path, error: UnicodeDecodeError, encoding: str = "utf-8") -> DataValidationError:
    """The error for a file that is not ``encoding`` text, naming its first such line and what to do."""
    return DataValidationError(f"not {encoding.upper()} text ({error.reason}); save the file as {encoding.upper()}",
                               path=str(path), line=undecodable_line(path, encoding))


def undecodable_line(path: Path, encoding: str = "utf-8") -> int | None:
    """The number of the first line of ``path`` (``.gz`` too) that is not ``encoding`` text (None if unknown).

    Read line by line as bytes: a shop's file may be many GB, and only the bad line is wanted."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    raw.decode(encoding)
                except UnicodeDecodeError:
                    return number
    except _READ_ERRORS:
        return None
    return None
