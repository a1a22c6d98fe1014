#!/usr/bin/env python3
"""Train a logistic-regression fraud classifier by mini-batch gradient descent.

Pure Python (no numpy) so the example runs anywhere a python3 does. Batches
are drawn from a seeded shuffle, positives can be up-weighted (`class_weight`)
to counter the class imbalance, and L2 regularization keeps the weights small.
The decision threshold is either fixed (a number) or "auto": the one that
maximizes F1 on the training split.

The model is then scored on the validation split, which it was not trained on,
and those metrics are what the sweep's selection compares (`select` in
BUILD.toml): the variant with the best validation F1 wins. The test split is
never read here.

Params come from the `train` table of the JSON file at `--params`: mlbuild
fills it from params.toml's `train.*` keys and the swept `train.lr` and
`train.l2` of this variant.

Outputs in <out>/: model.json (weights, bias, threshold, params and the
preprocessing needed to score raw transactions, so the file alone is enough
for inference) and val_metrics.json.
"""

import argparse
import csv
import json
import math
import os
import random
import sys

from scoring import best_f1_threshold, classification_metrics, summary_line

DEFAULT_PARAMS = {
    "lr": 0.1,
    "epochs": 15,
    "batch_size": 64,
    "l2": 0.0001,
    "seed": 42,
    "class_weight": 2.0,
    "threshold": "auto",
}
DIGITS = 10


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def load_params(path):
    params = dict(DEFAULT_PARAMS)
    if path:
        with open(path, encoding="utf-8") as f:
            params.update(json.load(f).get("train", {}))
    unknown = sorted(set(params) - set(DEFAULT_PARAMS))
    if unknown:
        fail(f"unknown param `train.{unknown[0]}`; known: {sorted(DEFAULT_PARAMS)}")
    for key in ("lr", "l2", "class_weight"):
        if not is_number(params[key]) or params[key] < 0:
            fail(f"param `train.{key}` must be a non-negative number, got {params[key]!r}")
    for key in ("epochs", "batch_size", "seed"):
        if not isinstance(params[key], int) or isinstance(params[key], bool):
            fail(f"param `train.{key}` must be an integer, got {params[key]!r}")
    if params["epochs"] < 1 or params["batch_size"] < 1:
        fail("params `train.epochs` and `train.batch_size` must be at least 1")
    t = params["threshold"]
    if t != "auto" and (not is_number(t) or not 0.0 < t < 1.0):
        fail(f'param `train.threshold` must be "auto" or a number in (0, 1), got {t!r}')
    return params


def load_csv(path):
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        if header[-1] != "label":
            fail(f"`{os.path.basename(path)}`: last column must be `label`, got `{header[-1]}`")
        xs, ys = [], []
        for cells in reader:
            xs.append([float(c) for c in cells[:-1]])
            ys.append(int(cells[-1]))
    return header[:-1], xs, ys


def sigmoid(z):
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def predict(weights, bias, x):
    return sigmoid(bias + math.fsum(map(float.__mul__, weights, x)))


def log_loss(weights, bias, xs, ys, sample_weight):
    total, norm = 0.0, 0.0
    for x, y in zip(xs, ys):
        p = min(max(predict(weights, bias, x), 1e-12), 1.0 - 1e-12)
        sw = sample_weight[y]
        total += -sw * (y * math.log(p) + (1 - y) * math.log(1.0 - p))
        norm += sw
    return total / norm


def train(xs, ys, params):
    rng = random.Random(params["seed"])
    n_features = len(xs[0])
    weights = [0.0] * n_features
    # Start the bias at the prior log-odds: with ~3% positives, starting at 0
    # would spend the first epochs just learning the base rate.
    pos_w = float(params["class_weight"]) * sum(ys)
    bias = math.log(pos_w / (len(ys) - sum(ys))) if pos_w > 0 else 0.0
    lr, l2, bs = float(params["lr"]), float(params["l2"]), params["batch_size"]
    sample_weight = {0: 1.0, 1: float(params["class_weight"])}
    order = list(range(len(xs)))
    history = []
    for _ in range(params["epochs"]):
        rng.shuffle(order)
        for start in range(0, len(order), bs):
            batch = order[start : start + bs]
            grad = [0.0] * n_features
            grad_b = 0.0
            norm = 0.0
            for i in batch:
                x, y = xs[i], ys[i]
                sw = sample_weight[y]
                err = sw * (predict(weights, bias, x) - y)
                grad_b += err
                norm += sw
                for j, v in enumerate(x):
                    if v:
                        grad[j] += err * v
            step = lr / norm
            weights = [w - step * g - lr * l2 * w for w, g in zip(weights, grad)]
            bias -= step * grad_b
        loss = log_loss(weights, bias, xs, ys, sample_weight)
        history.append(round(loss, DIGITS))
    return weights, bias, history


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True, help="train.csv from the features stage")
    parser.add_argument("--val", required=True, help="val.csv from the features stage")
    parser.add_argument("--stats", required=True, help="feature_stats.json")
    parser.add_argument("--params", help='JSON file: {"train": {lr, l2, epochs, ...}}')
    parser.add_argument("--out", required=True, help="output directory")
    args = parser.parse_args()

    params = load_params(args.params)
    features, xs, ys = load_csv(args.train)
    val_features, val_xs, val_ys = load_csv(args.val)
    with open(args.stats, encoding="utf-8") as f:
        stats = json.load(f)
    if stats["features"] != features or val_features != features:
        fail("feature_stats.json, train.csv and val.csv disagree on the feature list")
    if not 0 < sum(ys) < len(ys):
        fail("training data must contain both classes")

    weights, bias, history = train(xs, ys, params)
    # Round once, here, and score with the rounded values: they are what
    # model.json holds, so serve.py and evaluate.py compute the same numbers.
    weights = [round(w, DIGITS) for w in weights]
    bias = round(bias, DIGITS)
    probs = [predict(weights, bias, x) for x in xs]
    if params["threshold"] == "auto":
        threshold, _ = best_f1_threshold(probs, ys)
    else:
        threshold = float(params["threshold"])
    threshold = round(threshold, DIGITS)
    train_metrics = classification_metrics(probs, ys, threshold, "train")
    val_metrics = classification_metrics(
        [predict(weights, bias, x) for x in val_xs], val_ys, threshold, "val"
    )

    model = {
        "format": "mlbuild-example/logistic-regression/v1",
        "features": features,
        "weights": weights,
        "bias": bias,
        "threshold": threshold,
        "params": params,
        "training": {
            "rows": len(ys),
            "positives": sum(ys),
            "loss_history": history,
            "final_loss": history[-1],
            "train_f1": train_metrics["f1"],
        },
        "preprocessing": stats["transform"],
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "model.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(model, sort_keys=True, indent=2) + "\n")
    with open(os.path.join(args.out, "val_metrics.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(val_metrics, sort_keys=True, indent=2) + "\n")
    print(
        f"train: lr {params['lr']}, l2 {params['l2']}, {params['epochs']} epochs on "
        f"{len(ys)} rows, final loss {history[-1]:.4f}, threshold {threshold:.4f}, "
        f"train F1 {train_metrics['f1']:.4f}; val: {summary_line(val_metrics)}"
    )


if __name__ == "__main__":
    main()
