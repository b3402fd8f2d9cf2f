"""WSGI entry point (gunicorn recoapi.wsgi)."""

from modeling import runtime as _runtime  # noqa: F401  (first: environment for TensorFlow)

import os  # noqa: E402

from django.conf import settings  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402

from recoapi import unused_libraries  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "recoapi.settings")
with unused_libraries.hidden(unused_libraries.unused(settings)):  # about 16 MB less per worker on SQLite
    django_application = get_wsgi_application()
    from recoapi import fast_lane  # the API's views: after Django's set-up

    application = fast_lane.wrap(django_application)
