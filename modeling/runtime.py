"""Process-wide runtime settings, imported first by every entry point.

TensorFlow Recommenders works only with Keras 2 (tf-keras), which TensorFlow
selects only when ``TF_USE_LEGACY_KERAS=1`` is set before tensorflow is first
imported. The other variables keep the stack quiet and offline: models are
loaded from local paths, never from a hub. Every entry point (manage.py,
wsgi/asgi, tests, notebooks) imports this module before anything else, so the
variables are set in exactly one place.
"""

from __future__ import annotations

import os

RUNTIME_ENV: dict[str, str] = {
    "TF_USE_LEGACY_KERAS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

for _name, _value in RUNTIME_ENV.items():
    # TF_USE_LEGACY_KERAS is not negotiable: TFRS refuses Keras 3.
    if _name == "TF_USE_LEGACY_KERAS":
        os.environ[_name] = _value
    else:
        os.environ.setdefault(_name, _value)


def configure() -> None:
    """No-op whose call documents that the runtime settings are applied.

    Importing this module applies them; entry points call ``configure()`` so
    that linters do not drop the import as unused.
    """
