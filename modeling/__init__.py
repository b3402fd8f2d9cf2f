"""Core of the recommendation service: data, embeddings, model, evaluation.

Plain Python; never imports Django. ``modeling.runtime`` is imported first so
that TensorFlow always starts with the legacy (tf-keras) Keras.
"""

from modeling import runtime as _runtime  # noqa: F401  (must run before tensorflow)

__all__: list[str] = []
