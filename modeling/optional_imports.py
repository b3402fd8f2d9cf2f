"""Keeping a library's optional imports from loading what the process never uses.

Some libraries import others whenever they are installed, for features this project never uses, and go
on without them when that import fails (lightgbm: scikit-learn, pandas and pyarrow; Django REST framework:
PostgreSQL's driver and ``requests``; the rotating log handler: Redis's client). :func:`hidden` makes
those imports fail for the length of a block (the library's own import, or a web application's load) and
makes them importable again right after, for any later import that wants them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


@contextmanager
def hidden(names: Iterable[str]) -> Iterator[None]:
    """Within the block, ``import <name>`` raises ImportError for each of ``names`` not yet imported."""
    kept_out = [name for name in names if name not in sys.modules]
    for name in kept_out:
        sys.modules[name] = None  # type: ignore[assignment]  (None: "import <name>" raises ImportError)
    try:
        yield
    finally:
        for name in kept_out:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
