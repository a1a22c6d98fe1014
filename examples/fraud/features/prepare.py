#!/usr/bin/env python3
"""Split validated transactions three ways and turn them into model features.

The input has already passed `//data:validated` (types, ranges, categories,
unique ids), so this stage only parses it; a cell that still does not parse
stops it with the line and column rather than a traceback.

The split is stratified by label and seeded: `train` fits the model, `val`
chooses among the sweep's variants (and nothing else), `test` is touched only
by the final evaluation. Feature statistics (means, standard deviations,
category vocabulary) are fitted on the training split only, so nothing leaks
from val or test.

Outputs in <out>/:
- train.csv, val.csv: encoded features and `label`, for training and selection;
- test.csv: the held-out transactions as raw rows (the columns of
  transactions.csv), because evaluation scores them through serve.py, the same
  code path the shipped artifact uses;
- feature_stats.json: the transform, needed to encode a raw transaction.
"""

import argparse
import csv
import hashlib
import json
import math
import os
import random
import sys

DEFAULT_PARAMS = {"val_fraction": 0.2, "test_fraction": 0.2, "seed": 7}

# column -> parser; the order is transactions.csv's.
PARSERS = [
    ("transaction_id", int),
    ("amount", float),
    ("hour", int),
    ("merchant_category", str),
    ("distance_km", float),
    ("card_present", int),
    ("velocity_24h", int),
    ("is_fraud", int),
]
COLUMNS = [name for name, _ in PARSERS]
NUMERIC = ["log_amount", "log_distance_km", "velocity_24h"]


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def load_params(path):
    params = dict(DEFAULT_PARAMS)
    if path:
        with open(path, encoding="utf-8") as f:
            params.update(json.load(f).get("features", {}))
    unknown = sorted(set(params) - set(DEFAULT_PARAMS))
    if unknown:
        fail(f"unknown param `features.{unknown[0]}`; known: {sorted(DEFAULT_PARAMS)}")
    for key in ("val_fraction", "test_fraction"):
        v = params[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v < 1.0:
            fail(f"param `features.{key}` must be in (0, 1), got {v!r}")
    if params["val_fraction"] + params["test_fraction"] >= 1.0:
        fail("params `features.val_fraction` + `features.test_fraction` must leave rows to train on")
    if isinstance(params["seed"], bool) or not isinstance(params["seed"], int):
        fail(f"param `features.seed` must be an integer, got {params['seed']!r}")
    return params


def load_rows(path):
    """(raw cells, parsed row) per data row."""
    name = os.path.basename(path)
    out = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != COLUMNS:
            fail(f"`{name}`: header {header} is not {COLUMNS}")
        for line_no, cells in enumerate(reader, start=2):
            if len(cells) != len(COLUMNS):
                fail(f"`{name}` line {line_no}: expected {len(COLUMNS)} cells, got {len(cells)}")
            row = {}
            for (col, parse), text in zip(PARSERS, cells):
                try:
                    row[col] = parse(text)
                except ValueError:
                    fail(f"`{name}` line {line_no}: column `{col}`: cannot parse {text!r}")
            out.append((cells, row))
    if not out:
        fail(f"`{name}` has a header but no rows")
    return out


def stratified_split(rows, val_fraction, test_fraction, seed):
    """Indices of train, val and test; each keeps the file order."""
    rng = random.Random(seed)
    train, val, test = [], [], []
    for label in (0, 1):
        idx = [i for i, (_, r) in enumerate(rows) if r["is_fraud"] == label]
        rng.shuffle(idx)
        n_test = int(round(len(idx) * test_fraction))
        n_val = int(round(len(idx) * val_fraction))
        test.extend(idx[:n_test])
        val.extend(idx[n_test : n_test + n_val])
        train.extend(idx[n_test + n_val :])
    return sorted(train), sorted(val), sorted(test)


def numeric_raw(row):
    """The numeric inputs before standardization."""
    return {
        "log_amount": math.log1p(row["amount"]),
        "log_distance_km": math.log1p(row["distance_km"]),
        "velocity_24h": float(row["velocity_24h"]),
    }


def fit_stats(train):
    stats = {}
    for name in NUMERIC:
        values = [numeric_raw(r)[name] for r in train]
        mean = math.fsum(values) / len(values)
        var = math.fsum((v - mean) ** 2 for v in values) / len(values)
        std = math.sqrt(var) if var > 0 else 1.0
        stats[name] = {"mean": round(mean, 10), "std": round(std, 10)}
    categories = sorted({r["merchant_category"] for r in train})
    return stats, categories


def feature_names(categories):
    return (
        [f"{n}_z" for n in NUMERIC]
        + ["hour_sin", "hour_cos", "card_present"]
        + [f"merchant_{c}" for c in categories]
    )


def transform(row, stats, categories):
    # serve.py computes exactly this from feature_stats.json's `transform`; keep
    # the two in step (evaluation goes through serve.py, so a mismatch shows up
    # as a drop in test metrics and fails the gate).
    raw = numeric_raw(row)
    values = [(raw[n] - stats[n]["mean"]) / stats[n]["std"] for n in NUMERIC]
    angle = 2.0 * math.pi * row["hour"] / 24
    values += [math.sin(angle), math.cos(angle), float(row["card_present"])]
    # A category unseen in training maps to all zeros.
    values += [1.0 if row["merchant_category"] == c else 0.0 for c in categories]
    return values


def fmt(x):
    s = f"{x:.6f}"
    return "0.000000" if s == "-0.000000" else s


def write_features(path, rows, stats, categories):
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(feature_names(categories) + ["label"])
        for r in rows:
            w.writerow([fmt(v) for v in transform(r, stats, categories)] + [r["is_fraud"]])


def write_raw(path, cells):
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        w.writerows(cells)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="transactions.csv (validated)")
    parser.add_argument("--params", help='JSON file: {"features": {val_fraction, test_fraction, seed}}')
    parser.add_argument("--out", required=True, help="output directory")
    args = parser.parse_args()

    params = load_params(args.params)
    rows = load_rows(args.input)
    if {r["is_fraud"] for _, r in rows} != {0, 1}:
        fail("both classes must be present in the data")
    train_i, val_i, test_i = stratified_split(
        rows, float(params["val_fraction"]), float(params["test_fraction"]), params["seed"]
    )
    train = [rows[i][1] for i in train_i]
    val = [rows[i][1] for i in val_i]
    stats, categories = fit_stats(train)

    os.makedirs(args.out, exist_ok=True)
    write_features(os.path.join(args.out, "train.csv"), train, stats, categories)
    write_features(os.path.join(args.out, "val.csv"), val, stats, categories)
    write_raw(os.path.join(args.out, "test.csv"), [rows[i][0] for i in test_i])

    def split_summary(idx):
        return {"rows": len(idx), "fraud": sum(rows[i][1]["is_fraud"] for i in idx)}

    summary = {
        "schema_version": 2,
        "input": {
            "file": os.path.basename(args.input),
            "sha256": sha256_file(args.input),
            "rows": len(rows),
            "columns": COLUMNS,
        },
        "params": params,
        "split": {
            "train": split_summary(train_i),
            "val": split_summary(val_i),
            "test": split_summary(test_i),
        },
        "transform": {
            "numeric": {
                "log_amount_z": {"source": "amount", "fn": "log1p", **stats["log_amount"]},
                "log_distance_km_z": {
                    "source": "distance_km",
                    "fn": "log1p",
                    **stats["log_distance_km"],
                },
                "velocity_24h_z": {
                    "source": "velocity_24h",
                    "fn": "identity",
                    **stats["velocity_24h"],
                },
            },
            "cyclic": {"hour": {"period": 24, "features": ["hour_sin", "hour_cos"]}},
            "passthrough": ["card_present"],
            "one_hot": {
                "merchant_category": {
                    "values": categories,
                    "features": [f"merchant_{c}" for c in categories],
                }
            },
        },
        "features": feature_names(categories),
        "label": "label",
    }
    with open(os.path.join(args.out, "feature_stats.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(summary, sort_keys=True, indent=2) + "\n")

    s = summary["split"]
    print(
        f"prepare: {len(rows)} rows; train {s['train']['rows']} ({s['train']['fraud']} fraud), "
        f"val {s['val']['rows']} ({s['val']['fraud']} fraud), "
        f"test {s['test']['rows']} ({s['test']['fraud']} fraud); "
        f"{len(summary['features'])} features"
    )


if __name__ == "__main__":
    main()
