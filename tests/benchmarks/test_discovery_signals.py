"""The signals `benchmarks/discovery_signals.py` tries on the ranking stage, on sequences small enough to count by
hand."""

from __future__ import annotations

import numpy as np

from benchmarks.discovery_signals import discovery_probabilities, extra_features


def test_discovery_transitions_count_only_steps_into_a_product_new_to_the_sequence() -> None:
    # Shopper 0: 0 -> 1 -> 0 -> 2 (the step back to 0 is a return); shopper 1: 1 -> 2 -> 2 -> 0 (a repeat, once).
    users = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    items = np.array([0, 1, 0, 2, 1, 2, 2, 0])
    discovery = discovery_probabilities(users, items, 3).toarray()
    np.testing.assert_allclose(discovery, [[0.0, 0.5, 0.5], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    # Every step counted, 1 -> 0 (the return) too: the stage's transitions give 1 -> 0 and 1 -> 2 half each.
    extra = extra_features(np.array([[0, 2, -1], [0, 2, -1]]), [np.array([2, 1]), np.array([], dtype=np.int64)],
                           users, items, 3)
    np.testing.assert_allclose(extra["discovery"], [[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(extra["discovery_share"], [[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    # The reverse transition: P(1 follows | candidate): 0 -> 1 in one of 0's two steps, 2 never led to 1.
    np.testing.assert_allclose(extra["reverse"], [[0.5, 0.0, 0.0], [0.0, 0.0, 0.0]])
