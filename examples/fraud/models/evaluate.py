#!/usr/bin/env python3
"""Evaluate the selected fraud model on the held-out test split.

The test split is raw transactions, scored through serve.py (the code that
ships in the artifact): parsing, preprocessing and the model together. So the
metrics describe what a user of the artifact gets, and a preprocessing
mismatch between training and serving would show up here and fail the gate.

Output: <out>/metrics.json: precision, recall, F1, accuracy, ROC AUC, log loss
and the confusion counts (sorted keys, fixed rounding: byte-for-byte stable).
The `gates` of //models:evaluation are checked against it.
"""

import argparse
import csv
import json
import os
import sys

from scoring import classification_metrics, summary_line
from serve import InputError, ModelError, load_model, parse_row


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model.json")
    parser.add_argument("--test", required=True, help="test.csv (raw transactions) from the features stage")
    parser.add_argument("--out", required=True, help="output directory")
    args = parser.parse_args()

    try:
        model = load_model(args.model)
    except ModelError as e:
        fail(f"model `{args.model}`: {e}")
    probs, ys = [], []
    with open(args.test, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        for raw in reader:
            try:
                probs.append(model.probability(parse_row(raw)))
                ys.append(int(raw["is_fraud"]))
            except (InputError, KeyError, ValueError) as e:
                fail(f"`{os.path.basename(args.test)}` line {reader.line_num}: {e}")
    if not ys:
        fail("test.csv has no rows")

    metrics = classification_metrics(probs, ys, model.threshold, "test")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "metrics.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(metrics, sort_keys=True, indent=2) + "\n")
    print(f"evaluate: {summary_line(metrics)}")


if __name__ == "__main__":
    main()
