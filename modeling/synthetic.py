"""Built-in demo data: a shop whose shoppers have hidden tastes a model can learn.

The generator writes the file format of an Amazon Reviews 2018 category (a
reviews JSON-lines file and a ``meta_`` JSON-lines file), so the demo goes
through exactly the loader that real data goes through.

How the data is drawn (deterministic for a given seed):

- products belong to one of ``len(_DEPARTMENTS) * 4`` sub-categories, carry a brand
  tied to their department, a price drawn per department and a Zipf-like
  popularity;
- each shopper has a hidden taste: one to three favourite sub-categories and a
  favourite brand;
- each interaction is, with probability ``taste_strength``, a product of a
  favourite sub-category (popularity-weighted; 30% of those from the favourite
  brand), otherwise a product drawn by popularity alone; a shopper never reviews
  the same product twice;
- ratings are higher for products that match the taste; review texts are short
  sentences that mention the product and the sentiment.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from modeling.atomic import atomic_write

logger = logging.getLogger(__name__)

DEMO_CATEGORY_NAME = "Demo_Shop"
REVIEWS_FILENAME = f"{DEMO_CATEGORY_NAME}_5.json.gz"
META_FILENAME = f"meta_{DEMO_CATEGORY_NAME}.json.gz"
PARAMS_FILENAME = ".generator.json"

# department -> sub-category -> product nouns
_DEPARTMENTS: dict[str, dict[str, list[str]]] = {
    "Kitchen": {
        "Coffee": ["coffee grinder", "french press", "espresso cups", "pour-over kettle", "coffee beans"],
        "Baking": ["baking sheet", "stand mixer", "silicone spatula", "loaf pan", "measuring cups"],
        "Cookware": ["cast iron skillet", "saucepan", "dutch oven", "wok", "stock pot"],
        "Knives": ["chef knife", "paring knife", "knife sharpener", "cutting board", "bread knife"],
    },
    "Outdoors": {
        "Camping": ["tent", "sleeping bag", "camp stove", "headlamp", "folding chair"],
        "Hiking": ["hiking boots", "trekking poles", "daypack", "water filter", "trail map case"],
        "Cycling": ["bike helmet", "bike lights", "cycling gloves", "bike pump", "saddle bag"],
        "Fishing": ["fishing rod", "tackle box", "fishing reel", "lure set", "waders"],
    },
    "Electronics": {
        "Audio": ["wireless headphones", "bluetooth speaker", "earbuds", "soundbar", "turntable"],
        "Computing": ["mechanical keyboard", "wireless mouse", "usb-c hub", "laptop stand", "webcam"],
        "Photography": ["camera lens", "tripod", "camera bag", "memory card", "ring light"],
        "Smart Home": ["smart plug", "smart bulb", "video doorbell", "thermostat", "motion sensor"],
    },
    "Beauty": {
        "Skincare": ["face serum", "moisturizer", "sunscreen", "cleanser", "eye cream"],
        "Hair Care": ["shampoo", "conditioner", "hair dryer", "hair oil", "styling cream"],
        "Fragrance": ["eau de parfum", "body mist", "cologne", "scented candle", "perfume oil"],
        "Makeup": ["lipstick", "mascara", "foundation", "eyeshadow palette", "makeup brushes"],
    },
    "Toys": {
        "Board Games": ["strategy game", "party game", "chess set", "puzzle game", "card game"],
        "Building Sets": ["brick set", "magnetic tiles", "marble run", "robot kit", "model kit"],
        "Puzzles": ["jigsaw puzzle", "3d puzzle", "brain teaser", "puzzle mat", "wooden puzzle"],
        "Outdoor Play": ["kite", "water blaster", "jump rope", "frisbee", "sand toys"],
    },
    "Books": {
        "Fiction": ["mystery novel", "fantasy novel", "thriller", "short story collection", "sci-fi novel"],
        "Cooking": ["baking cookbook", "vegetarian cookbook", "grilling guide", "pasta cookbook", "spice guide"],
        "Travel": ["city guide", "hiking guide", "road atlas", "phrasebook", "travel journal"],
        "Children": ["picture book", "bedtime stories", "activity book", "first words book", "comic book"],
    },
    "Pets": {
        "Dog": ["dog leash", "chew toy", "dog bed", "dog shampoo", "treat pouch"],
        "Cat": ["scratching post", "cat tree", "cat toy", "litter mat", "cat fountain"],
        "Aquarium": ["aquarium filter", "fish food", "aquarium heater", "gravel vacuum", "tank light"],
        "Bird": ["bird feeder", "bird cage", "seed mix", "perch set", "bird bath"],
    },
    "Sports": {
        "Fitness": ["yoga mat", "dumbbells", "resistance bands", "foam roller", "kettlebell"],
        "Running": ["running shoes", "running belt", "sports watch", "reflective vest", "hydration vest"],
        "Team Sports": ["soccer ball", "basketball", "shin guards", "goalkeeper gloves", "training cones"],
        "Swimming": ["swim goggles", "swim cap", "kickboard", "swim fins", "towel poncho"],
    },
}
_BRAND_PARTS_A = ["North", "Blue", "Urban", "Bright", "Golden", "Silver", "Wild", "Pure", "Iron", "Maple",
                  "Cedar", "Nova", "Lumen", "Coastal", "Summit", "Velvet", "Harbor", "Pixel", "Willow", "Atlas"]
_BRAND_PARTS_B = ["Works", "Craft", "Labs", "Co", "Goods", "Studio", "Line", "House", "Supply", "Gear"]
_ADJECTIVES = ["Classic", "Premium", "Compact", "Deluxe", "Essential", "Pro", "Everyday", "Lightweight",
               "Heavy-Duty", "Eco", "Modern", "Vintage", "Ultra", "Smart", "Travel"]
_VARIANTS = ["", "", "", "Mini", "XL", "2-Pack", "Set", "Plus", "II", "Max"]
_PRAISE = ["Love this {noun}", "Great {noun}, works as described", "Exactly the {noun} I wanted",
           "Excellent quality {noun}", "Best {noun} I have owned", "Really happy with this {noun}"]
_NEUTRAL = ["Decent {noun} for the price", "The {noun} is okay", "Does the job as a {noun}",
            "Average {noun}, nothing special"]
_COMPLAINT = ["Disappointed with this {noun}", "The {noun} broke quickly", "Would not buy this {noun} again",
              "Poor quality {noun}"]
_SUMMARY = {5: "Five Stars", 4: "Four Stars", 3: "Three Stars", 2: "Two Stars", 1: "One Star"}

_BRAND_LOYALTY = 0.3  # share of taste-driven picks that go to the shopper's favourite brand
_START_TIME = 1_609_459_200  # 2021-01-01 UTC
_SPAN_SECONDS = 730 * 86_400  # two years


@dataclass(frozen=True)
class DemoParams:
    """Size and shape of the demo data set.

    Attributes:
        n_users: number of shoppers.
        n_items: number of products.
        n_interactions: target number of reviews (the result is within a few percent).
        seed: random seed; the same parameters always give byte-identical files.
        taste_strength: probability that an interaction follows the shopper's hidden taste.
        min_per_user: fewest reviews a shopper writes (5 mirrors Amazon's 5-core files).
    """

    n_users: int = 2000
    n_items: int = 500
    n_interactions: int = 30_000
    seed: int = 42
    taste_strength: float = 0.85
    min_per_user: int = 5

    def validate(self) -> None:
        """Raise ``ValueError`` when the sizes cannot produce a sensible data set."""
        if self.n_users < 1 or self.n_items < 2:
            raise ValueError(f"need at least 1 user and 2 items, got n_users={self.n_users}, n_items={self.n_items}")
        if self.min_per_user < 1 or self.min_per_user > self.n_items:
            raise ValueError(f"min_per_user must be in 1..n_items, got {self.min_per_user}")
        if self.n_interactions < self.n_users * self.min_per_user:
            raise ValueError(
                f"n_interactions={self.n_interactions} is below n_users * min_per_user = "
                f"{self.n_users * self.min_per_user}"
            )
        if self.n_interactions > self.n_users * self.n_items // 2:
            raise ValueError(
                f"n_interactions={self.n_interactions} exceeds half of all user-item pairs "
                f"({self.n_users * self.n_items // 2}); add users or items"
            )
        if not 0.0 <= self.taste_strength <= 1.0:
            raise ValueError(f"taste_strength must be in [0, 1], got {self.taste_strength}")


def _subcategories() -> list[tuple[str, str, list[str]]]:
    return [(dept, sub, nouns) for dept, subs in _DEPARTMENTS.items() for sub, nouns in subs.items()]


def generate_demo_data(output_dir: Path | str, params: DemoParams | None = None, *, progress: bool = True,
                       force: bool = False) -> dict[str, Any]:
    """Write an Amazon-2018-style demo category into ``output_dir``.

    Files: ``Demo_Shop_5.json.gz`` (reviews), ``meta_Demo_Shop.json.gz`` (products) and
    ``.generator.json`` (the parameters). When ``.generator.json`` already records the same
    parameters and both data files exist, nothing is written (``skipped`` is true).

    Args:
        output_dir: target directory (created).
        params: sizes and seed; defaults to :class:`DemoParams`.
        progress: show a progress bar.
        force: regenerate even when the files are current.

    Returns:
        ``{"skipped": bool, "users": int, "items": int, "interactions": int, "path": str}``.
    """
    params = params or DemoParams()
    params.validate()
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    params_path = output / PARAMS_FILENAME
    if not force and params_path.is_file() and (output / REVIEWS_FILENAME).is_file() and (
        output / META_FILENAME
    ).is_file():
        recorded = json.loads(params_path.read_text(encoding="utf-8"))
        if recorded.get("params") == asdict(params):
            return {"skipped": True, **recorded["counts"], "path": str(output)}

    rng = np.random.default_rng(params.seed)
    subcats = _subcategories()
    n_sub = len(subcats)
    departments = list(_DEPARTMENTS)

    # Brands: each tied to one department.
    brand_names = [f"{a}{b}" for a in _BRAND_PARTS_A for b in _BRAND_PARTS_B]
    rng.shuffle(brand_names)
    n_brands = min(len(brand_names), max(len(departments) * 2, params.n_items // 12))
    brands = brand_names[:n_brands]
    brand_dept = np.arange(n_brands) % len(departments)

    # Products.
    item_sub = np.concatenate([np.arange(n_sub), rng.integers(0, n_sub, size=max(0, params.n_items - n_sub))])
    item_sub = item_sub[: params.n_items]
    rng.shuffle(item_sub)
    item_dept = np.array([departments.index(subcats[s][0]) for s in item_sub])
    item_brand = np.empty(params.n_items, dtype=np.int64)
    for dept_index in range(len(departments)):
        members = np.flatnonzero(item_dept == dept_index)
        dept_brands = np.flatnonzero(brand_dept == dept_index)
        item_brand[members] = rng.choice(dept_brands, size=len(members))
    popularity = 1.0 / np.power(rng.permutation(params.n_items) + 1.0, 0.8)
    price_scale = rng.uniform(8, 120, size=len(departments))
    item_price = np.round(price_scale[item_dept] * rng.lognormal(0.0, 0.5, size=params.n_items), 2)
    item_ids = [f"B{index:09d}" for index in range(params.n_items)]
    item_noun = [subcats[s][2][int(rng.integers(0, len(subcats[s][2])))] for s in item_sub]

    meta_lines: list[str] = []
    for index in range(params.n_items):
        dept, sub, _ = subcats[item_sub[index]]
        noun = item_noun[index]
        brand = brands[item_brand[index]]
        adjective = _ADJECTIVES[int(rng.integers(0, len(_ADJECTIVES)))]
        variant = _VARIANTS[int(rng.integers(0, len(_VARIANTS)))]
        title = " ".join(part for part in (brand, adjective, noun.title(), variant) if part)
        description = [
            f"{'An' if adjective[0] in 'AEIOU' else 'A'} {adjective.lower()} {noun} from {brand} "
            f"for {sub.lower()} lovers.",
            f"Part of our {dept.lower()} range.",
        ]
        meta_lines.append(json.dumps({
            "asin": item_ids[index],
            "title": title,
            "brand": brand,
            "category": [dept, sub],
            "description": description,
            "price": f"${item_price[index]:.2f}",
            "main_cat": dept,
        }))

    # Shoppers: hidden tastes and how many reviews each writes.
    extra = params.n_interactions - params.n_users * params.min_per_user
    weights = rng.lognormal(0.0, 0.8, size=params.n_users)
    counts = params.min_per_user + rng.multinomial(extra, weights / weights.sum())
    counts = np.minimum(counts, params.n_items // 2 if params.n_items >= 2 * params.min_per_user else params.n_items)
    # Inverse-CDF sampling tables, built once: each draw is a binary search, so a shopper costs
    # O(draws * log n) whatever the catalogue size.
    items_by_sub = [np.flatnonzero(item_sub == s) for s in range(n_sub)]
    cdf_by_sub = [_cdf(popularity[members]) for members in items_by_sub]
    global_cdf = _cdf(popularity)
    brand_pools: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    sub_dept = np.array([departments.index(dept) for dept, _, _ in subcats])

    def brand_pool(sub: int, brand: int) -> tuple[np.ndarray, np.ndarray]:
        key = (sub, brand)
        if key not in brand_pools:
            members = items_by_sub[sub][item_brand[items_by_sub[sub]] == brand]
            brand_pools[key] = (members, _cdf(popularity[members]))
        return brand_pools[key]

    review_lines: list[str] = []
    user_ids = [f"A{index:07d}" for index in range(params.n_users)]
    iterator = tqdm(range(params.n_users), desc="demo shoppers", disable=not progress, unit="shopper")
    for user in iterator:
        n_fav = int(rng.integers(1, 4))
        favourites = rng.choice(n_sub, size=n_fav, replace=False)
        dept_brands = np.flatnonzero(brand_dept == sub_dept[favourites[0]])
        fav_brand = int(rng.choice(dept_brands))
        need = int(counts[user])
        chosen = np.zeros(0, dtype=np.int64)
        for _round in range(40):
            m = 2 * (need - len(chosen)) + 16
            draws = np.searchsorted(global_cdf, rng.random(m), side="right")
            taste = rng.random(m) < params.taste_strength
            loyal = rng.random(m) < _BRAND_LOYALTY
            which = favourites[rng.integers(0, n_fav, size=m)]
            for sub in favourites:
                mask = taste & (which == sub)
                members, cdf = items_by_sub[sub], cdf_by_sub[sub]
                if len(members) == 0:
                    continue
                draws[mask] = members[np.searchsorted(cdf, rng.random(int(mask.sum())), side="right")]
                brand_members, brand_cdf = brand_pool(int(sub), fav_brand)
                mask &= loyal
                if len(brand_members):
                    draws[mask] = brand_members[
                        np.searchsorted(brand_cdf, rng.random(int(mask.sum())), side="right")]
            merged = np.concatenate([chosen, np.minimum(draws, params.n_items - 1)])
            _, first = np.unique(merged, return_index=True)
            chosen = merged[np.sort(first)][:need]
            if len(chosen) >= need:
                break
        times = np.sort(rng.integers(_START_TIME, _START_TIME + _SPAN_SECONDS, size=len(chosen)))
        liked = np.isin(item_sub[chosen], favourites)
        ratings = np.clip(np.round(np.where(liked, 4.4, 3.2) + rng.normal(0, 0.8, size=len(chosen))), 1, 5)
        picks = rng.integers(0, 1 << 30, size=len(chosen))
        name = f"Shopper {user}"
        for item, timestamp, rating, pick in zip(chosen, times, ratings.astype(int), picks, strict=True):
            templates = _PRAISE if rating >= 4 else _NEUTRAL if rating == 3 else _COMPLAINT
            text = templates[pick % len(templates)].format(noun=item_noun[item]) + "."
            review_lines.append(json.dumps({
                "overall": float(rating),
                "verified": True,
                "reviewerID": user_ids[user],
                "asin": item_ids[item],
                "reviewerName": name,
                "reviewText": text,
                "summary": _SUMMARY[int(rating)],
                "unixReviewTime": int(timestamp),
            }))

    _write_gzip_lines(output / META_FILENAME, meta_lines)
    _write_gzip_lines(output / REVIEWS_FILENAME, review_lines)
    result_counts = {"users": params.n_users, "items": params.n_items, "interactions": len(review_lines)}
    tmp = params_path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"params": asdict(params), "counts": result_counts}, indent=2), encoding="utf-8")
    os.replace(tmp, params_path)
    logger.info("demo data written to %s: %s", output, result_counts)
    return {"skipped": False, **result_counts, "path": str(output)}


def _cdf(weights: np.ndarray) -> np.ndarray:
    """Normalised cumulative weights (n,) for inverse-CDF sampling with ``searchsorted``."""
    if len(weights) == 0:
        return np.zeros(0)
    cdf = np.cumsum(weights, dtype=np.float64)
    return cdf / cdf[-1]


def _write_gzip_lines(path: Path, lines: list[str]) -> None:
    """Write ``lines`` as gzipped JSON lines via a temporary file and a rename (mtime 0 and no file name in the
    header: reproducible)."""
    with atomic_write(path, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as handle:
        handle.write(("\n".join(lines) + "\n").encode("utf-8"))
