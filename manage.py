#!/usr/bin/env python
"""Django's command-line utility for the recommendation service."""

from modeling import runtime as _runtime  # noqa: F401  (first: environment for TensorFlow)

import os  # noqa: E402
import sys  # noqa: E402


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "recoapi.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
