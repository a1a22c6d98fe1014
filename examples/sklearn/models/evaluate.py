#!/usr/bin/env python3
"""Evaluate the selected model on the held-out test split.

The model is loaded and scored through serve.py, the code that ships in the
artifact, so the metrics describe what a user of the artifact gets: a model
file serve.py cannot load, or a feature it cannot find, fails here rather
than in production.

Output: <out>/metrics.json: F1, ROC AUC, accuracy, precision, recall, log loss
and the confusion counts (sorted keys, fixed rounding: byte-for-byte stable).
The `gates` of //models:evaluation are checked against it.
"""

import argparse
import json
import os
import sys

import pandas as pd

from scoring import classification_metrics, summary_line
from serve import InputError, ModelError, load, predict_proba


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model.pkl of the selected variant")
    parser.add_argument("--test", required=True, help="test.csv from the features stage")
    parser.add_argument("--out", required=True, help="output directory")
    args = parser.parse_args()

    try:
        bundle = load(args.model)
    except ModelError as e:
        fail(f"model `{args.model}`: {e}")
    test = pd.read_csv(args.test)
    label = bundle["label"]
    if label not in test.columns or test.empty:
        fail(f"`{os.path.basename(args.test)}` has no rows or no column `{label}`")
    try:
        probs = predict_proba(bundle, test)
    except InputError as e:
        fail(f"`{os.path.basename(args.test)}`: {e}")

    metrics = classification_metrics(test[label], probs, bundle["threshold"])
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "metrics.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(metrics, sort_keys=True, indent=2) + "\n")
    print(f"evaluate: {summary_line(metrics)}")


if __name__ == "__main__":
    main()
