"""A small shop's own export in the ``csv`` source's format, made from MovieLens latest-small.

Usage:
    .venv/bin/python benchmarks/csv_shop.py --output benchmarks/.work/csv-shop     # then:
    .venv/bin/python manage.py evaluate --source csv --path benchmarks/.work/csv-shop --output X.json

The 300 most active raters, each one's 100 most recent ratings (``interactions.csv``: ``user_id``, ``item_id``,
``timestamp``, ``event`` = ``rating``, ``rating``), and the rated movies (``items.csv``: ``item_id``, ``title``,
``category`` = the first genre). About 30,000 interactions over about 6,000 products: a catalogue twenty times
the shoppers, few interactions per product, and rating sessions whose order says little (a shopper rates many
movies within minutes): the kind of shop on which validation items are few and noisy. Deterministic.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
MOVIELENS = ROOT.parent / "shared" / "datasets" / "movielens_ml_latest_small"


def build(source: Path, output: Path, *, users: int = 300, per_user: int = 100) -> dict[str, int]:
    """Write ``interactions.csv`` and ``items.csv`` into ``output`` (created); returns the row counts."""
    ratings = pd.read_csv(source / "ratings.csv")
    movies = pd.read_csv(source / "movies.csv")
    counts = ratings.groupby("userId").size().sort_values(ascending=False, kind="stable")
    chosen = ratings[ratings["userId"].isin(counts.index[:users])]
    chosen = chosen.sort_values(["userId", "timestamp", "movieId"], kind="stable").groupby("userId").tail(per_user)
    interactions = pd.DataFrame({"user_id": "u" + chosen["userId"].astype(str),
                                 "item_id": "m" + chosen["movieId"].astype(str),
                                 "timestamp": chosen["timestamp"], "event": "rating", "rating": chosen["rating"]})
    rated = movies[movies["movieId"].isin(chosen["movieId"])]
    items = pd.DataFrame({"item_id": "m" + rated["movieId"].astype(str), "title": rated["title"],
                          "category": rated["genres"].str.split("|").str[0].replace("(no genres listed)", "")})
    output.mkdir(parents=True, exist_ok=True)
    interactions.to_csv(output / "interactions.csv", index=False)
    items.to_csv(output / "items.csv", index=False)
    return {"interactions": len(interactions), "items": len(items), "users": interactions["user_id"].nunique()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=MOVIELENS, help="MovieLens latest-small folder.")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / ".work" / "csv-shop")
    args = parser.parse_args()
    if not (args.source / "ratings.csv").is_file():
        sys.exit(f"{args.source}: no ratings.csv (MovieLens latest-small)")
    counts = build(args.source, args.output)
    sys.stdout.write(f"{counts['users']} shoppers, {counts['items']} products, {counts['interactions']} "
                     f"interactions in {args.output}\n")


if __name__ == "__main__":
    main()
