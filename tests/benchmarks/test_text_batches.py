"""`benchmarks/text_batches.py` times the text encoder both ways over the same texts and finds the same vectors."""

from __future__ import annotations

import numpy as np

from benchmarks.text_batches import compare, given_order
from modeling import artifacts
from modeling.exported_text import OnnxTextEncoder
from tests.conftest import Pipeline


def test_both_ways_are_timed_in_turn_and_give_the_same_vectors(pipeline: Pipeline) -> None:
    encoder = OnnxTextEncoder(artifacts.text_export_path(artifacts.load_bundle(pipeline.models / pipeline.version)))
    texts = ["a long product description " * 20, "cup", "espresso machine", "mug " * 7, "kettle"]
    given = given_order(encoder, texts, 2)
    assert given.shape == (5, encoder.dim)
    for n, text in enumerate(texts):  # in the texts' own order
        assert np.abs(given[n] - encoder.encode([text])[0]).max() <= 1e-5
    result = compare(encoder, texts, rounds=3, batch_size=2)
    assert {name: len(seconds) for name, seconds in result["seconds"].items()} == {"given": 3, "sorted": 3}
    assert result["texts"] == 5 and result["characters"]["max"] == len(texts[0])
    assert 0 <= result["max_abs_difference"] <= 1e-5
