#!/usr/bin/env python3
"""Add engineered features to cancer.csv and split it into train / val / test.

The engineered features are simple functions of one row (ratios and logs), so
they need no statistics fitted on the data and nothing can leak between the
splits through them:

- area_perimeter_ratio: mean area / mean perimeter, which grows with the size
  of a nucleus but not with the roughness of its border;
- log_mean_area, log_worst_area: the areas span two orders of magnitude;
- worst_mean_{radius,texture,smoothness}_ratio: how far the worst nuclei are
  from the average ones, a sign of irregular tissue.

The split is stratified by `malignant` and seeded: `train` fits the model,
`val` chooses among the sweep's variants (and nothing else), `test` is read
only by the final evaluation.

Params come from the `features` table of the JSON file at `--params`.

Outputs in <out>/: train.csv, val.csv and test.csv, all with the same columns:
`sample_id`, the 30 measurements, the engineered features and `malignant`,
rows in `sample_id` order, floats as "%.10g", "\n" line endings.
"""

import argparse
import json
import os
import sys

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

DEFAULT_PARAMS = {"val_fraction": 0.2, "test_fraction": 0.2, "seed": 7}
ID, LABEL = "sample_id", "malignant"

# (new column, numerator, denominator); a denominator of None means log.
ENGINEERED = [
    ("area_perimeter_ratio", "mean_area", "mean_perimeter"),
    ("log_mean_area", "mean_area", None),
    ("log_worst_area", "worst_area", None),
    ("worst_mean_radius_ratio", "worst_radius", "mean_radius"),
    ("worst_mean_texture_ratio", "worst_texture", "mean_texture"),
    ("worst_mean_smoothness_ratio", "worst_smoothness", "mean_smoothness"),
]


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


def engineer(frame):
    """`frame` with the ENGINEERED columns inserted before the label."""
    sources = sorted({c for _, num, den in ENGINEERED for c in (num, den) if c})
    missing = [c for c in sources if c not in frame.columns]
    if missing:
        fail(f"cancer.csv has no column `{missing[0]}`")
    # Logs and ratios of measurements that are sizes: all must be positive.
    for c in sources:
        if not (frame[c] > 0).all():
            fail(f"column `{c}` has a value <= 0 (row {int((frame[c] <= 0).idxmax())})")
    out = frame.drop(columns=[LABEL])
    for name, num, den in ENGINEERED:
        out[name] = np.log(frame[num]) if den is None else frame[num] / frame[den]
    out[LABEL] = frame[LABEL]
    return out


def split(frame, val_fraction, test_fraction, seed):
    """Stratified train / val / test frames, each in sample_id order."""
    rest, test = train_test_split(
        frame, test_size=test_fraction, stratify=frame[LABEL], random_state=seed
    )
    # val_fraction is of the whole dataset, so rescale it to what is left.
    train, val = train_test_split(
        rest,
        test_size=val_fraction / (1.0 - test_fraction),
        stratify=rest[LABEL],
        random_state=seed,
    )
    return [part.sort_values(ID) for part in (train, val, test)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="cancer.csv from //data:raw")
    parser.add_argument("--params", help='JSON file: {"features": {val_fraction, test_fraction, seed}}')
    parser.add_argument("--out", required=True, help="output directory")
    args = parser.parse_args()

    params = load_params(args.params)
    frame = pd.read_csv(args.input)
    for c in (ID, LABEL):
        if c not in frame.columns:
            fail(f"`{os.path.basename(args.input)}` has no column `{c}`")
    if sorted(frame[LABEL].unique()) != [0, 1]:
        fail(f"column `{LABEL}` must hold both 0 and 1")

    frame = engineer(frame)
    parts = split(frame, float(params["val_fraction"]), float(params["test_fraction"]), params["seed"])

    os.makedirs(args.out, exist_ok=True)
    summary = []
    for name, part in zip(("train", "val", "test"), parts):
        part.to_csv(
            os.path.join(args.out, f"{name}.csv"), index=False, float_format="%.10g", lineterminator="\n"
        )
        summary.append(f"{name} {len(part)} ({int(part[LABEL].sum())} malignant)")
    n_features = frame.shape[1] - 2
    print(f"prepare: {len(frame)} samples, {n_features} features; " + ", ".join(summary))


if __name__ == "__main__":
    main()
