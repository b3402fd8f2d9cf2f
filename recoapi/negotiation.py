"""Content negotiation: an unknown ``?format=`` is a 406 that names the formats, not DRF's bare 404."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation


class FormatNegotiation(DefaultContentNegotiation):
    """DRF's negotiation, answering a ``format`` no renderer of the endpoint has with 406 and the ones it has."""

    def filter_renderers(self, renderers: Sequence[Any], format: str) -> list[Any]:  # noqa: A002 (DRF's name)
        kept = [renderer for renderer in renderers if renderer.format == format]
        if not kept:
            formats = ", ".join(sorted({str(renderer.format) for renderer in renderers}))
            raise NotAcceptable(f"Unknown format {format[:40]!r}; this endpoint answers in: {formats}.")
        return kept
