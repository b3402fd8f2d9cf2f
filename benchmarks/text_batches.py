"""How long the ONNX text encoder takes over a shop's product texts, batched longest first or in the given order.

Usage:
    .venv/bin/python benchmarks/text_batches.py --source amazon2018 --path ../shared/datasets/amazon2018_gift_cards \
        --output benchmarks/results/text_batches_gift_cards.json      # about a minute
    .venv/bin/python benchmarks/text_batches.py --source movielens --path ../shared/datasets/movielens_ml_latest_small \
        --limit 1500 --output benchmarks/results/text_batches_movielens.json

Loads the data set's products, makes each one's text as publishing does (``modeling.datasets.item_text``), and
encodes the first ``--limit`` of them with the text encoder's export (``models/text_encoder``, written there from
the installed MiniLM when absent), one thread, as the text process runs it, alternately (given, sorted, sorted,
given, ...) ``--rounds`` rounds of each, after one batch run untimed:

- ``sorted``: ``OnnxTextEncoder.encode``, longest text first, batches of ``--batch-size`` (what the service does);
- ``given``: batches of the same size in the products' own order (what versions before did), each padded to its
  longest text.

Prints and writes each round's seconds, the texts' lengths in characters, and the largest difference between the
two ways' vectors (each batch is masked, so it should be 0 or rounding).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modeling import runtime as _runtime  # noqa: E402,F401  (first: the runtime environment)

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from modeling import datasets as ds  # noqa: E402
from modeling.embeddings import default_model_path  # noqa: E402
from modeling.exported_text import OnnxTextEncoder, ensure_text_export  # noqa: E402
from modeling.sources import SOURCES, load_source  # noqa: E402


def given_order(encoder: OnnxTextEncoder, texts: list[str], batch_size: int) -> np.ndarray:
    """(n, t) vectors of ``texts`` in batches of consecutive texts, each padded to its longest."""
    return np.concatenate([np.zeros((0, encoder.dim), dtype=np.float32),
                           *(encoder.encode_batch(texts[start:start + batch_size])
                             for start in range(0, len(texts), batch_size))])


def compare(encoder: OnnxTextEncoder, texts: list[str], *, rounds: int, batch_size: int) -> dict:
    """Seconds of each round, both ways in turn, and the largest difference between their vectors."""
    ways = {"given": lambda: given_order(encoder, texts, batch_size),
            "sorted": lambda: encoder.encode(texts, batch_size=batch_size)}
    seconds: dict[str, list[float]] = {"given": [], "sorted": []}
    vectors: dict[str, np.ndarray] = {}
    encoder.encode(texts[:batch_size])  # ONNX Runtime's first run sets itself up: not timed
    for turn in range(rounds):
        for name in (("given", "sorted") if turn % 2 == 0 else ("sorted", "given")):
            started = time.perf_counter()
            vectors[name] = ways[name]()
            seconds[name].append(round(time.perf_counter() - started, 3))
    lengths = np.asarray([len(t) for t in texts])
    return {"texts": len(texts), "batch_size": batch_size, "seconds": seconds,
            "characters": {"median": float(np.median(lengths)), "p90": float(np.percentile(lengths, 90)),
                           "max": int(lengths.max(initial=0))},
            "max_abs_difference": float(np.abs(vectors["given"] - vectors["sorted"]).max(initial=0.0))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, choices=SOURCES)
    parser.add_argument("--path", required=True, help="the data set's folder or file")
    parser.add_argument("--limit", type=int, default=2000, help="products encoded (the first ones)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each way")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--models", default=str(ROOT / "models"), help="where the text encoder's export is kept")
    parser.add_argument("--output", help="JSON file for the results")
    args = parser.parse_args()
    if args.limit < 1 or args.rounds < 1 or args.batch_size < 1:
        parser.error("--limit, --rounds and --batch-size must be at least 1")
    texts = ds.item_text(load_source(args.source, args.path).items)[:args.limit]
    export = ensure_text_export(args.models, default_model_path())
    encoder = OnnxTextEncoder(Path(args.models) / export["path"])
    result = {"source": args.source, "path": args.path,
              **compare(encoder, texts, rounds=args.rounds, batch_size=args.batch_size)}
    print(f"{result['texts']} texts (characters: median {result['characters']['median']:.0f}, 90th percentile "
          f"{result['characters']['p90']:.0f}, longest {result['characters']['max']}), batches of {args.batch_size}")
    for name in ("given", "sorted"):
        print(f"  {name:>6}: " + ", ".join(f"{s:.2f} s" for s in result["seconds"][name]))
    print(f"  largest difference between their vectors: {result['max_abs_difference']:.2e}")
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"written to {args.output}")


if __name__ == "__main__":
    main()
