"""The API's JSON renderer (recoapi.renderers): orjson's speed, DRF's bytes."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import pytest
from django.utils.translation import gettext_lazy
from rest_framework.renderers import JSONRenderer
from rest_framework.settings import api_settings

from recoapi.renderers import FastJSONRenderer


@dataclass
class _Point:
    x: int


def _answer() -> dict:
    """An answer like the API's, with every kind of value a view may hand the renderer."""
    item = {"item_id": "B000044645", "score": 0.945786, "title": "Café « Noir » — 500 g ☕", "brand": "BlueLine",
            "category": "Books > Fiction", "price": 198.66, "position": 1}
    return {
        "model_version": "20261207T034908Z",
        "recommendations": {f"A{n:07d}": {"recommendation_id": uuid.UUID(int=n).hex, "strategy": "two_tower",
                                          "items": [dict(item, position=p, score=round(1 / (p + 1), 6))
                                                    for p in range(1, 11)]} for n in range(20)},
        "numbers": [0, -1, 2**62, 1.5, 1e16, 123456789.125, -0.0, True, False, None],
        "when": dt.datetime(2026, 12, 7, 4, 1, 2, 345678, tzinfo=dt.UTC), "day": dt.date(2026, 12, 7),
        "naive": dt.datetime(2026, 12, 7, 4, 1, 2), "time": dt.time(4, 1, 2, 500),
        "id": uuid.UUID(int=7), "decimal": Decimal("1.10"), "lazy": gettext_lazy("Not found."),
        "numpy": {"int": np.int64(3), "float": np.float32(0.5), "double": np.float64(0.1), "array": np.arange(3),
                  "bool": np.bool_(True)},
        "separators": "a\u2028b\u2029c", "nested": [[{"empty": {}}, []]],
    }


def test_answers_are_drfs_bytes() -> None:
    data = _answer()
    assert FastJSONRenderer().render(data) == JSONRenderer().render(data)


def test_the_api_renders_with_it() -> None:
    assert [cls.__name__ for cls in api_settings.DEFAULT_RENDERER_CLASSES] == ["FastJSONRenderer"]


@pytest.mark.parametrize("data", [{1: "integer key"}, {"big": 2**70}, None, [], "text"])
def test_what_orjson_does_not_write_is_drfs_own(data: object) -> None:
    assert FastJSONRenderer().render(data) == JSONRenderer().render(data)


def test_indented_answers_are_drfs() -> None:
    data = _answer()
    for media_type in ("application/json; indent=4", "application/json; indent=0"):
        assert FastJSONRenderer().render(data, media_type) == JSONRenderer().render(data, media_type)
    assert FastJSONRenderer().render(data, None, {"indent": 2}) == JSONRenderer().render(data, None, {"indent": 2})


@pytest.mark.parametrize("value", [object(), _Point(1)])
def test_what_drf_cannot_write_raises_as_before(value: object) -> None:  # orjson alone would write a dataclass
    with pytest.raises(TypeError):
        JSONRenderer().render({"x": value})
    with pytest.raises(TypeError):
        FastJSONRenderer().render({"x": value})


def test_tiny_floats_are_the_same_numbers() -> None:
    data = {"scores": [1e-06, -2.5e-05, 1.5e-07, 5e-324]}
    ours, theirs = FastJSONRenderer().render(data), JSONRenderer().render(data)
    assert json.loads(ours) == json.loads(theirs) == data  # orjson writes 1e-6 where Python writes 1e-06
