#!/usr/bin/env python
"""Django's command-line utility for the recommendation service."""

from modeling import runtime as _runtime  # noqa: F401  (first: environment for TensorFlow)

import os  # noqa: E402
import sys  # noqa: E402


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "recoapi.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line
    from django.db import DatabaseError

    try:
        execute_from_command_line(sys.argv)
    except (ImproperlyConfigured, DatabaseError) as exc:
        # A setting that cannot work (DATABASE_URL's scheme, its missing name) or a database that cannot be reached
        # or does not exist, met by a command that does not say so itself (Django's own: migrate, runserver):
        # one line, as a CommandError gets, instead of a traceback through Django's internals.
        if "--traceback" in sys.argv:
            raise
        hint = ("; check DATABASE_URL, that its server is running and that the database exists (PostgreSQL: "
                "`createdb NAME`, then `manage.py migrate`)" if isinstance(exc, DatabaseError) else "")
        if isinstance(exc, DatabaseError):
            from recoapi.exceptions import database_error_parts

            if database_error_parts(exc)[0] == "database_not_migrated":  # tables of an earlier version, or none
                hint = ": the database lacks tables of this version: run `.venv/bin/python manage.py migrate`"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        sys.stderr.write(f"{type(exc).__name__}: {first}{hint}\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
