#!/usr/bin/env python3
"""Validate raw transactions, split them, and turn them into model features.

Validation is strict: the header must be exactly the expected columns, every
cell must parse as its column's type and lie in its range, and no cell may be
empty. Any violation stops the stage with a non-zero exit and a message naming
the line and column, so bad data never reaches training.

The split is stratified by label and seeded. Feature statistics (means,
standard deviations, category vocabulary) are fitted on the training split
only, then applied to both splits, so nothing leaks from the test set.

Outputs in <out>/: train.csv, test.csv (features + `label`), feature_stats.json
(everything needed to apply the same transform at inference time).
"""

import argparse
import csv
import hashlib
import json
import math
import os
import random
import re
import sys

MAX_REPORTED_ERRORS = 20
DEFAULT_PARAMS = {"test_fraction": 0.25, "seed": 7}
CATEGORY_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def parse_int(text, lo, hi):
    value = int(text)  # ValueError on "1.5", "abc", ""
    if not lo <= value <= hi:
        raise ValueError(f"{value} is outside [{lo}, {hi}]")
    return value


def parse_float(text, lo, hi):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    if not lo <= value <= hi:
        raise ValueError(f"{value} is outside [{lo}, {hi}]")
    return value


def parse_category(text):
    if not CATEGORY_RE.match(text):
        raise ValueError(f"{text!r} is not a lowercase identifier")
    return text


# column -> (type name for messages, parser). Order is the required header order.
SCHEMA = [
    ("transaction_id", "integer >= 1", lambda t: parse_int(t, 1, 10**12)),
    ("amount", "number in [0, 1000000]", lambda t: parse_float(t, 0.0, 1e6)),
    ("hour", "integer in [0, 23]", lambda t: parse_int(t, 0, 23)),
    ("merchant_category", "lowercase identifier", parse_category),
    ("distance_km", "number in [0, 20100]", lambda t: parse_float(t, 0.0, 20100.0)),
    ("card_present", "0 or 1", lambda t: parse_int(t, 0, 1)),
    ("velocity_24h", "integer in [0, 10000]", lambda t: parse_int(t, 0, 10000)),
    ("is_fraud", "0 or 1", lambda t: parse_int(t, 0, 1)),
]
COLUMNS = [name for name, _, _ in SCHEMA]


def fail(messages):
    for m in messages:
        print(f"error: {m}", file=sys.stderr)
    sys.exit(1)


def load_and_validate(path):
    """Return a list of dicts with typed values, or exit with every problem found."""
    name = os.path.basename(path)
    rows, errors, n_errors = [], [], 0
    seen_ids = set()
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            fail([f"`{name}` is empty: expected a header row"])
        if header != COLUMNS:
            missing = [c for c in COLUMNS if c not in header]
            extra = [c for c in header if c not in COLUMNS]
            detail = []
            if missing:
                detail.append(f"missing {missing}")
            if extra:
                detail.append(f"unexpected {extra}")
            if not detail:
                detail.append("columns are out of order")
            fail([f"`{name}`: bad header ({'; '.join(detail)}); expected {COLUMNS}"])
        for line_no, cells in enumerate(reader, start=2):
            if len(cells) != len(COLUMNS):
                n_errors += 1
                errors.append(
                    f"`{name}` line {line_no}: expected {len(COLUMNS)} cells, got {len(cells)}"
                )
                continue
            row = {}
            for (col, type_name, parse), text in zip(SCHEMA, cells):
                if text.strip() == "":
                    n_errors += 1
                    errors.append(f"`{name}` line {line_no}: column `{col}` is null (empty)")
                    continue
                try:
                    row[col] = parse(text)
                except ValueError:
                    n_errors += 1
                    errors.append(
                        f"`{name}` line {line_no}: column `{col}`: expected {type_name}, got {text!r}"
                    )
            if len(row) == len(COLUMNS):
                if row["transaction_id"] in seen_ids:
                    n_errors += 1
                    errors.append(
                        f"`{name}` line {line_no}: duplicate transaction_id {row['transaction_id']}"
                    )
                seen_ids.add(row["transaction_id"])
                rows.append(row)
    if n_errors:
        shown = errors[:MAX_REPORTED_ERRORS]
        if n_errors > len(shown):
            shown.append(f"... and {n_errors - len(shown)} more")
        shown.append(f"`{name}` failed validation with {n_errors} error(s)")
        fail(shown)
    if not rows:
        fail([f"`{name}` has a header but no rows"])
    labels = {r["is_fraud"] for r in rows}
    if labels != {0, 1}:
        fail([f"`{name}`: both classes must be present, found labels {sorted(labels)}"])
    return rows


def stratified_split(rows, test_fraction, seed):
    rng = random.Random(seed)
    train, test = [], []
    for label in (0, 1):
        idx = [i for i, r in enumerate(rows) if r["is_fraud"] == label]
        rng.shuffle(idx)
        n_test = int(round(len(idx) * test_fraction))
        test.extend(idx[:n_test])
        train.extend(idx[n_test:])
    # Keep the original file order inside each split: stable and easy to diff.
    return [rows[i] for i in sorted(train)], [rows[i] for i in sorted(test)]


def numeric_raw(row):
    """The numeric inputs before standardization."""
    return {
        "log_amount": math.log1p(row["amount"]),
        "log_distance_km": math.log1p(row["distance_km"]),
        "velocity_24h": float(row["velocity_24h"]),
    }


NUMERIC = ["log_amount", "log_distance_km", "velocity_24h"]


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
    raw = numeric_raw(row)
    values = [(raw[n] - stats[n]["mean"]) / stats[n]["std"] for n in NUMERIC]
    angle = 2.0 * math.pi * row["hour"] / 24.0
    values += [math.sin(angle), math.cos(angle), float(row["card_present"])]
    # A category unseen in training maps to all zeros.
    values += [1.0 if row["merchant_category"] == c else 0.0 for c in categories]
    return values


def fmt(x):
    s = f"{x:.6f}"
    return "0.000000" if s == "-0.000000" else s


def write_split(path, rows, stats, categories):
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(feature_names(categories) + ["label"])
        for r in rows:
            w.writerow([fmt(v) for v in transform(r, stats, categories)] + [r["is_fraud"]])


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="transactions.csv")
    parser.add_argument("--params", help="JSON file with test_fraction, seed")
    parser.add_argument("--out", required=True, help="output directory")
    args = parser.parse_args()

    params = dict(DEFAULT_PARAMS)
    if args.params:
        with open(args.params, encoding="utf-8") as f:
            params.update(json.load(f))
    tf = params["test_fraction"]
    if not isinstance(tf, (int, float)) or not 0.0 < tf < 1.0:
        fail([f"param `test_fraction` must be in (0, 1), got {tf!r}"])

    rows = load_and_validate(args.input)
    train, test = stratified_split(rows, float(tf), params["seed"])
    stats, categories = fit_stats(train)

    os.makedirs(args.out, exist_ok=True)
    write_split(os.path.join(args.out, "train.csv"), train, stats, categories)
    write_split(os.path.join(args.out, "test.csv"), test, stats, categories)

    summary = {
        "schema_version": 1,
        "input": {
            "file": os.path.basename(args.input),
            "sha256": sha256_file(args.input),
            "rows": len(rows),
            "columns": COLUMNS,
        },
        "params": {"seed": params["seed"], "test_fraction": tf},
        "split": {
            "train": {"rows": len(train), "fraud": sum(r["is_fraud"] for r in train)},
            "test": {"rows": len(test), "fraud": sum(r["is_fraud"] for r in test)},
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
            "one_hot": {"merchant_category": categories},
        },
        "features": feature_names(categories),
        "label": "label",
    }
    with open(os.path.join(args.out, "feature_stats.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(summary, sort_keys=True, indent=2) + "\n")

    print(
        f"prepare: validated {len(rows)} rows; train {len(train)} "
        f"({summary['split']['train']['fraud']} fraud), test {len(test)} "
        f"({summary['split']['test']['fraud']} fraud), {len(summary['features'])} features"
    )


if __name__ == "__main__":
    main()
