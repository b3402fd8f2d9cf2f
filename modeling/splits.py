"""Leave-last-out splits of the interactions table, in one seeded time order.

Interactions with the same timestamp are put in a seeded random order everywhere (a file's
order within one second or one day follows its sort key, not time).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from modeling import datasets as ds
from modeling.errors import TrainingError

HELD_OUT_MIN_ITEMS = 3
"""Distinct products a shopper needs to have a test and a validation item held out (and one to learn from)."""


@dataclass
class Split:
    """A leave-last-out split of the interactions table.

    Attributes:
        train: every interaction except the held-out ones.
        validation: one row per eligible user: the second-to-last distinct item.
        test: one row per eligible user: the last distinct item.
        order: each part's rows' places in the seeded time order of all interactions (``{"train": (len(train),),
            "validation": ..., "test": ...}`` int64), what :func:`histories_before` cuts by; empty for a split
            made by hand.
    """

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    order: dict[str, np.ndarray] = field(default_factory=dict)


def time_order(interactions: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """Interactions sorted by user and time, interactions with the same timestamp in a seeded random order.

    The order of a file within one second (MovieLens) or one day (Amazon reviews) follows the
    file's sort key (product id), not time, and must not decide which product came first or last.
    """
    ties = np.random.default_rng(seed).permutation(len(interactions))
    return (interactions.assign(_tie=ties).sort_values([ds.USER_ID, ds.TIMESTAMP, "_tie"], kind="stable")
            .drop(columns="_tie"))


TIED_NOTE_SHARE = 0.5
"""From this share of tied steps (:func:`tied_share`) on, ``evaluate`` says that the order is partly a seeded one."""


def tied_share(interactions: pd.DataFrame) -> float:
    """The share of the steps from one of a shopper's interactions to their next whose two times are equal (0 when
    no shopper has two): the order of those is :func:`time_order`'s seeded one, not the shop's. Amazon reviews
    carry a day (0.6 to 0.99 of the steps on the shared sets), MovieLens a second (0.16)."""
    ordered = interactions.sort_values([ds.USER_ID, ds.TIMESTAMP], kind="stable")
    users, times = ordered[ds.USER_ID].astype(str).to_numpy(), ordered[ds.TIMESTAMP].to_numpy()
    steps = users[1:] == users[:-1]
    return float((steps & (times[1:] == times[:-1])).sum() / steps.sum()) if steps.any() else 0.0


def leave_last_out_split(interactions: pd.DataFrame, *, min_items: int = HELD_OUT_MIN_ITEMS,
                         seed: int = 0) -> Split:
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
    frame = time_order(interactions, seed=seed).reset_index(drop=True)
    first = frame.drop_duplicates([ds.USER_ID, ds.ITEM_ID], keep="first")  # already in time order
    distinct = first.groupby(ds.USER_ID, sort=False)[ds.ITEM_ID].transform("size")
    rank_from_end = first.groupby(ds.USER_ID, sort=False).cumcount(ascending=False)
    eligible = distinct >= min_items
    test = first[eligible & (rank_from_end == 0)]
    validation = first[eligible & (rank_from_end == 1)]
    held = pd.concat([test, validation])[[ds.USER_ID, ds.ITEM_ID]]
    marker = frame.merge(held.assign(_held=True), on=[ds.USER_ID, ds.ITEM_ID], how="left")["_held"]
    train = frame[~marker.fillna(False).to_numpy(dtype=bool)]
    order = {"train": train.index.to_numpy(dtype=np.int64), "validation": validation.index.to_numpy(dtype=np.int64),
             "test": test.index.to_numpy(dtype=np.int64)}
    return Split(train=train.reset_index(drop=True), validation=validation.reset_index(drop=True),
                 test=test.reset_index(drop=True), order=order)


def require_held_out(split: Split, *, min_items: int = HELD_OUT_MIN_ITEMS) -> None:
    """Refuse a split that holds no test item: no shopper found ``min_items`` distinct products (one for
    validation, one for test, at least one to learn from), so every metric would read 0.

    Raises:
        TrainingError: naming how many shoppers there are and what each would need.
    """
    if len(split.test) > 0:
        return
    shoppers = pd.concat([split.train[ds.USER_ID], split.validation[ds.USER_ID]]).nunique()
    raise TrainingError(f"leave-last-out needs shoppers with at least {min_items} distinct products (one held out "
                        f"for validation, one for test, the rest to learn from); none of the {shoppers} shoppers "
                        f"has {min_items}: evaluate a larger export")


def histories_before(split: Split, stage: str) -> pd.DataFrame:
    """The interactions a model is given as each shopper's history when it ranks their held-out item.

    ``"validation"``: the training interactions before the validation item was found; ``"test"``: the training
    and validation interactions before the test item was found. In the split's time order (ties in its seeded
    order), so every model reads the same sequence: its most recent product is the one the shopper had
    interacted with last when they found the held-out item.

    A shopper who went back to earlier products after finding a held-out one (sessions of clicks do: 13% of
    the UCI clickstream's validation items) keeps those later interactions in training, where the models learn
    from them, but not in the history an item is ranked from: they happened after the moment being predicted.
    They never change which products a history holds (a product first found after the validation item is the
    test item), only their order and number, so models of the set of products (EASE, item-kNN, iALS) rank as
    before; sequential ones read the product that really came last. Shoppers without a held-out item keep
    their whole history.

    Raises:
        ValueError: ``stage`` is neither, or the split holds no time order (a split made by hand).
    """
    if stage not in ("validation", "test"):
        raise ValueError(f"stage must be 'validation' or 'test', not {stage!r}")
    if not split.order:
        raise ValueError("this split holds no time order: make it with leave_last_out_split")
    held = split.validation if stage == "validation" else split.test
    cut = pd.Series(split.order[stage], index=held[ds.USER_ID].to_numpy())
    parts = [(split.train, split.order["train"])]
    if stage == "test":
        parts.append((split.validation, split.order["validation"]))
    kept_parts = []
    for frame, order in parts:
        limit = cut.reindex(frame[ds.USER_ID].to_numpy()).to_numpy(dtype=np.float64)  # NaN: no held-out item
        kept = ~(order >= limit)  # NaN compares False: kept
        kept_parts.append((frame[kept], order[kept]))
    return _in_time_order(kept_parts)


def known_interactions(split: Split) -> pd.DataFrame:
    """The training and validation interactions together, in the split's time order (what a model refitted for
    the test items learns from).

    Raises:
        ValueError: the split holds no time order (a split made by hand).
    """
    if not split.order:
        raise ValueError("this split holds no time order: make it with leave_last_out_split")
    return _in_time_order([(split.train, split.order["train"]), (split.validation, split.order["validation"])])


def for_refit(split: Split) -> Split:
    """The split a model refitted for the test items is trained and measured on: the training and validation
    interactions together as its training part (:func:`known_interactions`, in time order), no validation items,
    the same test items, and the time order kept (:func:`histories_before` ``"test"`` gives what it gave on
    ``split``).

    Raises:
        ValueError: the split holds no time order (a split made by hand).
    """
    known = known_interactions(split)
    order = np.sort(np.concatenate([split.order["train"], split.order["validation"]]))
    return Split(train=known, validation=split.validation.iloc[:0], test=split.test,
                 order={"train": order, "validation": np.zeros(0, dtype=np.int64), "test": split.order["test"]})


def _in_time_order(parts: list[tuple[pd.DataFrame, np.ndarray]]) -> pd.DataFrame:
    """Frames with their rows' places in the time order (``(frame, (len(frame),) int64)`` each), as one frame
    in that order."""
    joined = pd.concat([frame for frame, _ in parts], ignore_index=True)
    return joined.iloc[np.argsort(np.concatenate([order for _, order in parts]), kind="stable")].reset_index(drop=True)
