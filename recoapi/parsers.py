"""The API's request body parser: DRF's JSON parser, with a clear 400 for JSON nested too deeply to read and for
an object that names a key twice.

Python's ``json`` module reads nested arrays and objects by recursion: a body of a few thousand ``[`` raises
``RecursionError``, which DRF's parser does not catch (it catches ``ValueError``), so the request ended in a 500.
It also keeps the last of a repeated key: ``{"users": ["a"], "users": ["b"]}`` answered b alone, as a repeated
query parameter did before it became a 400.
"""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from typing import IO, Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser, get_encoding
from rest_framework.utils import json


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's dict, refusing a key given twice (``ValueError``, which the parser answers with a 400)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key!r} is given twice in one object")
        out[key] = value
    return out


class SafeJSONParser(JSONParser):
    """:class:`rest_framework.parsers.JSONParser` answering JSON nested too deeply, or an object with a repeated key,
    with a 400 (``ParseError``); otherwise the same (NaN and Infinity refused as DRF's strict JSON does)."""

    def parse(self, stream: IO[bytes], media_type: str | None = None,
              parser_context: Mapping[str, Any] | None = None) -> Any:
        try:
            decoded = codecs.getreader(get_encoding(parser_context or {}))(stream)
            return json.load(decoded, parse_constant=json.strict_constant if self.strict else None,
                             object_pairs_hook=_unique_keys)
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply.") from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
