#!/usr/bin/env python3
"""Generate seeded synthetic credit-card transactions.

Each row is drawn from a class-conditional distribution: a transaction is first
labelled fraudulent with probability `fraud_rate`, then its features are drawn
from the legitimate or the fraudulent profile. The profiles overlap, so a model
has something real (but not trivial) to learn.

Params come from the `data` table of the JSON file at `--params` (mlbuild
writes it from the `data.*` keys of params.toml). `amount_scale` multiplies
every amount after it is drawn: 1.0 is the distribution the committed
`reference.csv` was drawn from, so any other value is drift that `//data:drift`
reports.

Output: `<out>/transactions.csv` with a header row. The same params always give
the same bytes: one seeded `random.Random`, fixed float formatting, "\n" line
endings, no timestamps.

Regenerate the reference snapshot (4,000 rows, another seed) with:

    echo '{"data": {"rows": 4000, "seed": 2024, "fraud_rate": 0.03, "amount_scale": 1.0}}' > /tmp/ref.json
    python3 generate.py --params /tmp/ref.json --out /tmp/ref && cp /tmp/ref/transactions.csv reference.csv
"""

import argparse
import csv
import json
import math
import os
import random
import sys

COLUMNS = [
    "transaction_id",
    "amount",
    "hour",
    "merchant_category",
    "distance_km",
    "card_present",
    "velocity_24h",
    "is_fraud",
]

# (category, weight for legitimate traffic, weight for fraud). Kept as a list,
# not a dict, so the draw order never depends on anything but this file.
MERCHANT_CATEGORIES = [
    ("grocery", 30, 4),
    ("restaurant", 20, 3),
    ("gas", 15, 4),
    ("entertainment", 10, 8),
    ("travel", 6, 14),
    ("online", 12, 30),
    ("electronics", 5, 22),
    ("jewelry", 2, 15),
]

DEFAULT_PARAMS = {"rows": 20000, "seed": 42, "fraud_rate": 0.03, "amount_scale": 1.0}


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def load_params(path):
    params = dict(DEFAULT_PARAMS)
    if path:
        with open(path, encoding="utf-8") as f:
            params.update(json.load(f).get("data", {}))
    unknown = sorted(set(params) - set(DEFAULT_PARAMS))
    if unknown:
        sys.exit(f"error: unknown params data.{unknown[0]}; known: {sorted(DEFAULT_PARAMS)}")
    rows, rate, scale = params["rows"], params["fraud_rate"], params["amount_scale"]
    if not is_int(rows) or rows <= 0:
        sys.exit(f"error: param `data.rows` must be a positive integer, got {rows!r}")
    if not is_number(rate) or not 0.0 < rate < 1.0:
        sys.exit(f"error: param `data.fraud_rate` must be in (0, 1), got {rate!r}")
    if not is_number(scale) or not scale > 0:
        sys.exit(f"error: param `data.amount_scale` must be a positive number, got {scale!r}")
    if not is_int(params["seed"]):
        sys.exit(f"error: param `data.seed` must be an integer, got {params['seed']!r}")
    return params


def poisson(rng, lam):
    """Knuth's method; fine for the small rates used here."""
    limit = math.exp(-lam)
    k = 0
    p = rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def draw_hour(rng, fraud):
    if fraud and rng.random() < 0.55:
        # Fraud clusters in the small hours.
        return rng.randrange(0, 6)
    # Daytime peak around 14:00 for everyone else.
    return int(round(rng.gauss(14.0, 4.0))) % 24


def draw_row(rng, fraud, legit_cats, fraud_cats):
    names = [c[0] for c in MERCHANT_CATEGORIES]
    if fraud and rng.random() < 0.35:
        # A stolen physical card used close to home: hard to tell from the owner.
        amount = rng.lognormvariate(3.9, 1.1)
        category = rng.choices(names, weights=fraud_cats)[0]
        distance = rng.expovariate(1.0 / 20.0)
        card_present = 1 if rng.random() < 0.7 else 0
        velocity = poisson(rng, 4.0)
    elif fraud:
        # Card-not-present fraud: remote, bigger, in bursts.
        amount = rng.lognormvariate(4.4, 1.2)
        category = rng.choices(names, weights=fraud_cats)[0]
        distance = rng.expovariate(1.0 / 120.0)
        card_present = 1 if rng.random() < 0.2 else 0
        velocity = poisson(rng, 5.5)
    else:
        amount = rng.lognormvariate(3.4, 1.0)
        category = rng.choices(names, weights=legit_cats)[0]
        distance = rng.expovariate(1.0 / 12.0)
        card_present = 1 if rng.random() < 0.80 else 0
        velocity = poisson(rng, 2.5)
    hour = draw_hour(rng, fraud)
    amount = min(max(amount, 0.5), 20000.0)
    distance = min(distance, 5000.0)
    return amount, hour, category, distance, card_present, velocity


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", help="JSON file: {\"data\": {rows, seed, fraud_rate, amount_scale}}")
    parser.add_argument("--out", required=True, help="output directory")
    args = parser.parse_args()

    params = load_params(args.params)
    rng = random.Random(params["seed"])
    legit_cats = [c[1] for c in MERCHANT_CATEGORIES]
    fraud_cats = [c[2] for c in MERCHANT_CATEGORIES]

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "transactions.csv")
    n_fraud = 0
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(COLUMNS)
        for i in range(params["rows"]):
            fraud = rng.random() < params["fraud_rate"]
            n_fraud += fraud
            amount, hour, category, distance, card_present, velocity = draw_row(
                rng, fraud, legit_cats, fraud_cats
            )
            writer.writerow(
                [
                    i + 1,
                    f"{amount * params['amount_scale']:.2f}",
                    hour,
                    category,
                    f"{distance:.3f}",
                    card_present,
                    velocity,
                    int(fraud),
                ]
            )

    rows = params["rows"]
    print(
        f"generate: wrote {rows} transactions ({n_fraud} fraud, "
        f"{100.0 * n_fraud / rows:.2f}%) to transactions.csv"
    )


if __name__ == "__main__":
    main()
