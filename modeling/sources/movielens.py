"""MovieLens, in both published layouts.

- 100K: ``u.data`` (user, item, rating, timestamp; tab-separated) and ``u.item``
  (``|``-separated, latin-1: id, title, release date, video release date, IMDb URL,
  19 genre flags).
- latest / 25M-style: ``ratings.csv`` (userId, movieId, rating, timestamp),
  ``movies.csv`` (movieId, title, genres joined by ``|``), optional ``tags.csv``.

Ratings become ``rating`` interactions with weight 1.0. Title and genres become
the item text; the first genre is the category. Every listed movie is kept in the
catalogue, rated or not. Tags are written by shoppers, so they are not product text
(a new movie has none, and a held-out rating's tags would leak into every model that
reads the product's text): each user's tags on a movie become the text of their
rating of it, like a review, and reach a model only through interactions in its
training data. Tags on movies the user did not rate are dropped and counted.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from modeling import datasets as ds
from modeling.errors import DataValidationError
from modeling.sources._files import check_ids, read_table, repeated_products, to_float, to_int

logger = logging.getLogger(__name__)

LOADER_VERSION = "movielens-2"  # 2: tags are the text of the tagger's rating, not product text
GENRES_100K = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
               "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
               "War", "Western"]


def load_movielens(
    path: Path | str,
    *,
    filters: ds.InteractionFilters | None = None,
    time_bounds: ds.TimeBounds | None = None,
) -> ds.CanonicalData:
    """Load a MovieLens directory (100K or latest layout, detected from the file names).

    Raises:
        DataValidationError: when neither layout is found or a file is malformed.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataValidationError("no such directory", path=str(path))
    if (path / "ratings.csv").is_file():
        return _load_latest(path, filters, time_bounds)
    if (path / "u.data").is_file():
        return _load_100k(path, filters, time_bounds)
    raise DataValidationError("not a MovieLens directory: expected ratings.csv + movies.csv (latest) "
                              "or u.data + u.item (100K)", path=str(path))


def _ratings(frame: pd.DataFrame, file: Path, names: tuple[str, str] = ("user", "item")) -> pd.DataFrame:
    """The interactions of a ratings file read with columns user, item, rating, timestamp (``names``: what the
    file calls the first two, for messages)."""
    ids = {column: frame[column].str.strip() for column in ("user", "item")}
    for column, name in zip(ids, names, strict=True):
        check_ids(frame, ids[column], name, file)
    ratings = to_float(frame, "rating", file, rule=(lambda v: (v >= 0) & (v <= 5), "is outside 0..5"))
    return pd.DataFrame({
        ds.USER_ID: ids["user"].to_numpy(),
        ds.ITEM_ID: ids["item"].to_numpy(),
        ds.TIMESTAMP: to_int(frame, "timestamp", file),
        ds.EVENT: "rating",
        ds.WEIGHT: 1.0,
        ds.RATING: ratings,
    })


def _load_latest(path: Path, filters: ds.InteractionFilters | None,
                 time_bounds: ds.TimeBounds | None) -> ds.CanonicalData:
    ratings_file, movies_file, tags_file = path / "ratings.csv", path / "movies.csv", path / "tags.csv"
    raw = read_table(ratings_file, columns=["userId", "movieId", "rating", "timestamp"],
                     required=["userId", "movieId", "rating", "timestamp"])
    raw = raw.rename(columns={"userId": "user", "movieId": "item"})
    interactions = _ratings(raw, ratings_file, ("userId", "movieId"))
    report = {"rating_rows": len(interactions)}

    movies = read_table(movies_file, columns=["movieId", "title", "genres"], required=["movieId", "title"])
    genres = movies["genres"] if "genres" in movies else pd.Series("", index=movies.index)
    genre_lists = genres.str.replace("(no genres listed)", "", regex=False).str.split("|")
    files = [ratings_file, movies_file]
    if tags_file.is_file():
        interactions, report["tags"], report["tags_without_rating"] = _tags_as_rating_text(interactions, tags_file)
        files.append(tags_file)
    movie_ids = movies["movieId"].str.strip()
    check_ids(movies, movie_ids, "movieId", movies_file)
    items = _items(movie_ids, movies["title"], genre_lists)
    items = items[~repeated_products(items, movies, movies_file)]
    report["movies"] = len(items)
    fingerprint = ds.file_fingerprint(files, salt=LOADER_VERSION)
    return ds.finish_tables(items, interactions, report=report, fingerprint=fingerprint,
                            source_name=str(ratings_file), keep_items="all", filters=filters,
                            time_bounds=time_bounds, time_hint="timestamps are read as unix seconds")


def _load_100k(path: Path, filters: ds.InteractionFilters | None,
               time_bounds: ds.TimeBounds | None) -> ds.CanonicalData:
    data_file, item_file = path / "u.data", path / "u.item"
    raw = read_table(data_file, columns=["user", "item", "rating", "timestamp"],
                     required=["user", "item", "rating", "timestamp"], sep="\t", header=False,
                     names=["user", "item", "rating", "timestamp"])
    interactions = _ratings(raw, data_file)
    report = {"rating_rows": len(interactions)}
    names = ["movieId", "title", "release", "video_release", "url", *GENRES_100K]
    movies = read_table(item_file, columns=names, required=["movieId", "title"], sep="|", header=False,
                        names=names, encoding="latin-1")
    flags = movies[GENRES_100K].eq("1").to_numpy()
    genre_lists = pd.Series([[g for g, f in zip(GENRES_100K, row, strict=True) if f] for row in flags],
                            index=movies.index)
    movie_ids = movies["movieId"].str.strip()
    check_ids(movies, movie_ids, "movie id", item_file)
    items = _items(movie_ids, movies["title"], genre_lists)
    items = items[~repeated_products(items, movies, item_file)]
    report["movies"] = len(items)
    fingerprint = ds.file_fingerprint([data_file, item_file], salt=LOADER_VERSION)
    return ds.finish_tables(items, interactions, report=report, fingerprint=fingerprint,
                            source_name=str(data_file), keep_items="all", filters=filters,
                            time_bounds=time_bounds, time_hint="timestamps are read as unix seconds")


def _tags_as_rating_text(interactions: pd.DataFrame, tags_file: Path) -> tuple[pd.DataFrame, int, int]:
    """Each user's tags on a movie (up to 20, in file order) as the text of their rating of it.

    Returns:
        ``(interactions with the text column, tags kept, tags on movies the user did not rate)``.
    """
    tags = read_table(tags_file, columns=["userId", "movieId", "tag"], required=["userId", "movieId", "tag"])
    tags = pd.DataFrame({ds.USER_ID: tags["userId"].str.strip(), ds.ITEM_ID: tags["movieId"].str.strip(),
                         "tag": tags["tag"].str.strip()})
    tags = tags[tags["tag"] != ""].drop_duplicates()
    text = (tags.groupby([ds.USER_ID, ds.ITEM_ID], sort=False)["tag"].agg(lambda t: ", ".join(t.iloc[:20]))
            .rename(ds.TEXT).reset_index())
    rated = interactions[[ds.USER_ID, ds.ITEM_ID]].drop_duplicates()
    matched = text.merge(rated, on=[ds.USER_ID, ds.ITEM_ID], how="inner")
    dropped = int(len(tags) - tags.merge(rated, on=[ds.USER_ID, ds.ITEM_ID], how="inner").shape[0])
    interactions = interactions.drop(columns=[ds.TEXT], errors="ignore").merge(
        matched, on=[ds.USER_ID, ds.ITEM_ID], how="left")
    interactions[ds.TEXT] = interactions[ds.TEXT].astype(object).where(interactions[ds.TEXT].notna(), None)
    return interactions, int(len(tags)) - dropped, dropped


def _items(ids: pd.Series, titles: pd.Series, genre_lists: pd.Series) -> pd.DataFrame:
    genre_lists = genre_lists.apply(lambda g: [x for x in (g if isinstance(g, list) else []) if x and x != "unknown"])
    description = [f"Genres: {', '.join(g)}" if g else "" for g in genre_lists]
    return pd.DataFrame({
        ds.ITEM_ID: ids.to_numpy(),
        ds.TITLE: titles.map(ds.clean_text).to_numpy(),
        ds.DESCRIPTION: description,
        ds.BRAND: "",
        ds.CATEGORY: [g[0] if g else "" for g in genre_lists],
        ds.PRICE: np.nan,
    })
