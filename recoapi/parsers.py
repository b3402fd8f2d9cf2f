"""The API's request body parser: DRF's JSON parser, with a clear 400 for JSON nested too deeply to read.

Python's ``json`` module reads nested arrays and objects by recursion: a body of a few thousand ``[`` raises
``RecursionError``, which DRF's parser does not catch (it catches ``ValueError``), so the request ended in a 500.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class SafeJSONParser(JSONParser):
    """:class:`rest_framework.parsers.JSONParser` answering JSON nested too deeply with a 400 (``ParseError``)."""

    def parse(self, stream: IO[bytes], media_type: str | None = None,
              parser_context: Mapping[str, Any] | None = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply.") from None
