"""The API's JSON renderer: DRF's ``JSONRenderer`` with the encoding done by orjson.

An answer for 100 shoppers is about 175 KB of JSON (1,000 products with their titles, brands, categories,
prices and scores). The standard library's encoder, which DRF's renderer calls, took 1.7 ms to write it in one
process and about a tenth of a 100-shopper request's time holding the interpreter's lock under load (py-spy,
docs/performance.md); orjson writes the same bytes in about a tenth of that time.

The bytes are DRF's: what orjson would write otherwise, or not at all, goes to DRF's own encoder (``default``):
dates and times, numpy values, dataclasses (which DRF refuses), lazy strings, decimals. A pretty-printed answer
(``Accept: application/json; indent=4``), the ``UNICODE_JSON``/``COMPACT_JSON`` settings turned off, and what
orjson refuses (keys that are not strings, integers beyond 64 bits) are rendered by DRF's code itself. Two
differences remain: a float below 0.0001 is written in orjson's shortest form (``1e-6``, not Python's ``1e-06``:
the same number for any JSON reader), and a NaN or infinite float is written ``null`` where DRF's strict mode
raised (an error answer before).
"""

from __future__ import annotations

from typing import Any

import orjson
from rest_framework.renderers import JSONRenderer

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_LINE_SEPARATOR, _PARAGRAPH_SEPARATOR = "\u2028".encode(), "\u2029".encode()


class FastJSONRenderer(JSONRenderer):
    """:class:`rest_framework.renderers.JSONRenderer`'s answers, encoded by orjson (see the module docstring)."""

    def render(self, data: Any, accepted_media_type: str | None = None,
               renderer_context: dict[str, Any] | None = None) -> bytes:
        if data is None:
            return b""
        if (self.ensure_ascii or not self.compact
                or self.get_indent(accepted_media_type, renderer_context or {}) is not None):
            return super().render(data, accepted_media_type, renderer_context)
        try:
            out = orjson.dumps(data, default=self.encoder_class().default, option=_OPTIONS)
        except orjson.JSONEncodeError:  # what only the standard encoder writes, or an error it raises itself
            return super().render(data, accepted_media_type, renderer_context)
        if _LINE_SEPARATOR in out or _PARAGRAPH_SEPARATOR in out:  # escaped, as DRF does: a JavaScript subset
            out = out.replace(_LINE_SEPARATOR, b"\\u2028").replace(_PARAGRAPH_SEPARATOR, b"\\u2029")
        return out
