"""The peer service of benchmarks/peer.py: what a shop would hand-roll instead of this project.

A Flask app with an implicit ALS model in memory (fitted by benchmarks/peer.py on the same interactions the
service imported), run under the same gunicorn settings as the service (threaded workers). It answers
``GET /recommendations?users=a,b&k=10`` with the top-k products per shopper, the shopper's own products
excluded, and the most popular products for a shopper it does not know; a bad ``k`` or a missing ``users``
gets a JSON 400. Nothing else: no database, no authentication, no throttling, no text, no filters.

Run: ``PEER_DIR=folder/with/als.npz+data.npz gunicorn -w 2 --threads 2 benchmarks.peer_app:app``.
"""

from __future__ import annotations

import os

import numpy as np
import scipy.sparse as sp
from flask import Flask, jsonify, request
from implicit.cpu.als import AlternatingLeastSquares

MODEL = AlternatingLeastSquares.load(os.path.join(os.environ["PEER_DIR"], "als.npz"))
_data = np.load(os.path.join(os.environ["PEER_DIR"], "data.npz"), allow_pickle=True)
ITEM_IDS = _data["item_ids"]
USER_INDEX = {str(u): n for n, u in enumerate(_data["user_ids"])}
SEEN = sp.csr_matrix((_data["seen_data"], _data["seen_indices"], _data["seen_indptr"]),
                     shape=(len(USER_INDEX), len(ITEM_IDS)))
POPULAR = _data["popular"]

app = Flask(__name__)


def _top(user: str, k: int) -> list[dict]:
    row = USER_INDEX.get(user)
    if row is None:
        return [{"item_id": str(ITEM_IDS[i]), "score": 0.0} for i in POPULAR[:k]]
    items, scores = MODEL.recommend(row, SEEN[row], N=k, filter_already_liked_items=True)
    return [{"item_id": str(ITEM_IDS[i]), "score": round(float(s), 6)} for i, s in zip(items, scores, strict=True)]


@app.get("/recommendations")
def recommendations():  # noqa: ANN201  (a Flask view)
    users = [u for u in request.args.get("users", "").split(",") if u]
    try:
        k = int(request.args.get("k", "10"))
    except ValueError:
        k = 0
    if not users or not 1 <= k <= 100:
        return jsonify({"error": "give users=a,b and k between 1 and 100"}), 400
    return jsonify({"recommendations": {user: {"items": _top(user, k)} for user in users}})
