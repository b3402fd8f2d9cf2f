"""ASGI entry point."""

from modeling import runtime as _runtime  # noqa: F401  (first: environment for TensorFlow)

import os  # noqa: E402

from django.core.asgi import get_asgi_application  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "recoapi.settings")
application = get_asgi_application()
