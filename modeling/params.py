"""The two-tower model's hyper-parameters (:class:`TwoTowerParams`), apart from the model itself.

Commands read these defaults to describe their options; keeping them out of :mod:`modeling.two_tower` lets
``manage.py train --help`` and the scheduler start without importing TensorFlow (seconds, and its console
noise). :mod:`modeling.two_tower` re-exports the class.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class TwoTowerParams:
    """Hyper-parameters of the model and its training run.

    Attributes:
        embedding_dim: size d of the output vectors of both towers.
        id_dim: size of the id embeddings (users, items and history items).
        hidden_dim: width of the hidden layer of each tower's MLP.
        temperature: softmax temperature over the (unit-norm) dot products.
        id_dropout: probability that a training example's ids are replaced by the OOV bucket.
        learning_rate: Adam learning rate.
        batch_size: examples per step (also the number of in-batch negatives).
        epochs: maximum number of epochs.
        patience: epochs without validation improvement before stopping early.
        seed: seed of weights, shuffling and dropout.
        logq_correction: subtract log(item frequency) from the in-batch logits, so popular items
            are not over-penalised for appearing as negatives more often (sampling-bias correction).
        logq_strength: the correction subtracts this multiple of log(item frequency) (1: the exact
            sampling-bias correction; below 1 keeps part of the popularity signal).
        history_length: most recent interactions the learned history embedding looks at (L).
        history_half_life_days: an interaction this much older than the window's latest counts half
            (0: no decay).
        attention_heads: > 0 adds the output of the most recent item attending over the window
            (multi-head attention with recency positions) to the query tower's inputs.
        recent_length: the last few of those, pooled separately (short-term interest).
        use_user_id: whether the query tower has a user id embedding at all.
        share_item_embedding: the history embedding reuses the candidate tower's item id embedding
            (one table learns from both roles) instead of a table of its own.
        causal_history: each training interaction is predicted from the window before it (True), or
            from the user's whole training window with that item left out (False: order-free).
        full_softmax_max_items: catalogues up to this size are trained with a softmax over every
            item (exact; logQ is then moot); larger ones with in-batch negatives. 0: always in-batch.
    """

    embedding_dim: int = 64
    id_dim: int = 64
    hidden_dim: int = 256
    temperature: float = 0.1
    id_dropout: float = 0.3
    learning_rate: float = 0.003
    batch_size: int = 512
    epochs: int = 15
    patience: int = 3
    seed: int = 42
    logq_correction: bool = True
    logq_strength: float = 1.0
    history_length: int = 50
    history_half_life_days: float = 180.0
    attention_heads: int = 0
    recent_length: int = 3
    use_user_id: bool = False
    share_item_embedding: bool = False
    full_softmax_max_items: int = 0
    causal_history: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], base: TwoTowerParams | None = None) -> TwoTowerParams:
        """Parameters from a mapping (e.g. the ``best`` of a search log) over ``base`` (defaults).

        Raises:
            ValueError: on an unknown name, a value of the wrong type or out of range.
        """
        if not isinstance(values, dict):
            raise ValueError(f"parameters must be a JSON object, got {type(values).__name__}")
        base = base or cls()
        known = base.to_dict()
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown parameters: {', '.join(unknown)}")
        checked: dict[str, Any] = {}
        for name, value in values.items():
            default = known[name]
            if isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, int):
                ok = isinstance(value, int) and not isinstance(value, bool)
            else:
                ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not ok:
                raise ValueError(f"parameter {name} must be {type(default).__name__}, got {value!r}")
            checked[name] = float(value) if isinstance(default, float) else value
        params = replace(base, **checked)
        params.validate()
        return params

    def validate(self) -> None:
        """Raise ValueError when a value is out of range."""
        if self.full_softmax_max_items < 0:
            raise ValueError(f"parameter full_softmax_max_items must be 0 or more, got {self.full_softmax_max_items}")
        if self.history_half_life_days < 0:
            raise ValueError(f"parameter history_half_life_days must be 0 or more, got {self.history_half_life_days}")
        if self.attention_heads < 0:
            raise ValueError(f"parameter attention_heads must be 0 or more, got {self.attention_heads}")
        for name in ("embedding_dim", "id_dim", "hidden_dim", "batch_size", "epochs", "patience", "history_length",
                     "recent_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"parameter {name} must be at least 1, got {getattr(self, name)}")
        for name in ("temperature", "learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"parameter {name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.id_dropout < 1:
            raise ValueError(f"parameter id_dropout must be in [0, 1), got {self.id_dropout}")
