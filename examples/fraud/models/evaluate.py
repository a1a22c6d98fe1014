#!/usr/bin/env python3
"""Evaluate a trained fraud model on the held-out test split.

Scores every test row with the model's weights and threshold and reports
precision, recall, F1, accuracy, ROC AUC (rank statistic, ties averaged),
log loss and the confusion counts.

Output: <out>/metrics.json (sorted keys, fixed rounding: byte-for-byte stable).
"""

import argparse
import csv
import json
import math
import os
import sys

DIGITS = 6


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def sigmoid(z):
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def roc_auc(probs, ys):
    """Mann-Whitney U / (n_pos * n_neg), with tied scores given their average rank."""
    pairs = sorted(zip(probs, ys))
    n_pos = sum(ys)
    n_neg = len(ys) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    rank_sum_pos = 0.0
    i = 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        avg_rank = (i + 1 + j) / 2.0  # ranks i+1 .. j
        rank_sum_pos += avg_rank * sum(y for _, y in pairs[i:j])
        i = j
    return (rank_sum_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def ratio(num, den):
    return num / den if den else 0.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model.json")
    parser.add_argument("--test", required=True, help="test.csv from the features stage")
    parser.add_argument("--out", required=True, help="output directory")
    args = parser.parse_args()

    with open(args.model, encoding="utf-8") as f:
        model = json.load(f)
    weights, bias, threshold = model["weights"], model["bias"], model["threshold"]

    with open(args.test, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        if header[:-1] != model["features"]:
            fail("test.csv features do not match the model's features")
        probs, ys = [], []
        for cells in reader:
            x = [float(c) for c in cells[:-1]]
            probs.append(sigmoid(bias + math.fsum(w * v for w, v in zip(weights, x))))
            ys.append(int(cells[-1]))
    if not ys:
        fail("test.csv has no rows")

    tp = sum(1 for p, y in zip(probs, ys) if p >= threshold and y == 1)
    fp = sum(1 for p, y in zip(probs, ys) if p >= threshold and y == 0)
    fn = sum(1 for p, y in zip(probs, ys) if p < threshold and y == 1)
    tn = len(ys) - tp - fp - fn
    precision = ratio(tp, tp + fp)
    recall = ratio(tp, tp + fn)
    f1 = ratio(2 * precision * recall, precision + recall)
    eps = 1e-12
    loss = -math.fsum(
        y * math.log(min(max(p, eps), 1 - eps)) + (1 - y) * math.log(min(max(1 - p, eps), 1 - eps))
        for p, y in zip(probs, ys)
    ) / len(ys)
    auc = roc_auc(probs, ys)

    metrics = {
        "split": "test",
        "threshold": round(threshold, DIGITS),
        "precision": round(precision, DIGITS),
        "recall": round(recall, DIGITS),
        "f1": round(f1, DIGITS),
        "accuracy": round(ratio(tp + tn, len(ys)), DIGITS),
        "auc": None if auc is None else round(auc, DIGITS),
        "log_loss": round(loss, DIGITS),
        "counts": {
            "rows": len(ys),
            "positives": tp + fn,
            "negatives": tn + fp,
            "tp": tp,
            "fp": fp,
            "tn": tn,
            "fn": fn,
        },
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "metrics.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(metrics, sort_keys=True, indent=2) + "\n")
    auc_text = "n/a" if auc is None else f"{auc:.4f}"
    print(
        f"evaluate: {len(ys)} test rows, precision {precision:.4f}, recall {recall:.4f}, "
        f"F1 {f1:.4f}, AUC {auc_text}"
    )


if __name__ == "__main__":
    main()
