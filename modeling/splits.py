"""Leave-last-out splits of the interactions table, in one seeded time order.

Interactions with the same timestamp are put in a seeded random order everywhere (a file's
order within one second or one day follows its sort key, not time).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from modeling import datasets as ds


@dataclass
class Split:
    """A leave-last-out split of the interactions table.

    Attributes:
        train: every interaction except the held-out ones.
        validation: one row per eligible user: the second-to-last distinct item.
        test: one row per eligible user: the last distinct item.
    """

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame


def time_order(interactions: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """Interactions sorted by user and time, interactions with the same timestamp in a seeded random order.

    The order of a file within one second (MovieLens) or one day (Amazon reviews) follows the
    file's sort key (product id), not time, and must not decide which product came first or last.
    """
    ties = np.random.default_rng(seed).permutation(len(interactions))
    return (interactions.assign(_tie=ties).sort_values([ds.USER_ID, ds.TIMESTAMP, "_tie"], kind="stable")
            .drop(columns="_tie"))


def leave_last_out_split(interactions: pd.DataFrame, *, min_items: int = 3, seed: int = 0) -> Split:
    """Hold out the last item each user found (test) and the one found before it (validation).

    A product a user interacted with several times counts from its first interaction (when the
    user found it), as in the cold-shopper protocol.

    Users with fewer than ``min_items`` distinct items stay wholly in train. All
    interactions with a held-out (user, item) pair leave train, so that a held-out
    item is never "already seen". Interactions with the same timestamp are put in a
    seeded random order (see :func:`time_order`).

    Args:
        interactions: canonical interactions table.
        min_items: fewest distinct items a user needs to contribute test/validation rows.
        seed: seed of the tie order.

    Returns:
        The split; every part is sorted by user and time (ties in the seeded order).
    """
    frame = time_order(interactions, seed=seed)
    first = frame.drop_duplicates([ds.USER_ID, ds.ITEM_ID], keep="first")  # already in time order
    distinct = first.groupby(ds.USER_ID, sort=False)[ds.ITEM_ID].transform("size")
    rank_from_end = first.groupby(ds.USER_ID, sort=False).cumcount(ascending=False)
    eligible = distinct >= min_items
    test = first[eligible & (rank_from_end == 0)]
    validation = first[eligible & (rank_from_end == 1)]
    held = pd.concat([test, validation])[[ds.USER_ID, ds.ITEM_ID]]
    marker = frame.merge(held.assign(_held=True), on=[ds.USER_ID, ds.ITEM_ID], how="left")["_held"]
    train = frame[~marker.fillna(False).to_numpy(dtype=bool)]
    return Split(train=train.reset_index(drop=True), validation=validation.reset_index(drop=True),
                 test=test.reset_index(drop=True))
