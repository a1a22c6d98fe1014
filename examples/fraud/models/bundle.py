#!/usr/bin/env python3
"""Bundle the trained model, its test metrics and a model card.

Refuses to bundle a model whose test F1 is below `min_f1`: a bad model fails
the build instead of shipping.

Outputs in <out>/: model.json and metrics.json (byte-for-byte copies of the
upstream outputs) and MODEL_CARD.md, a human-readable summary of the
hyperparameters, the data and the metrics, with the sha256 of both files.
"""

import argparse
import hashlib
import json
import os
import sys

DEFAULT_PARAMS = {"name": "fraud-detector", "version": "0.1.0", "min_f1": 0.5}


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def value_text(v):
    """Params as they were written in BUILD.toml (JSON spelling, stable)."""
    return json.dumps(v, sort_keys=True)


def model_card(name, version, model, metrics, digests):
    params = model["params"]
    training = model["training"]
    counts = metrics["counts"]
    lines = [
        f"# Model card: {name} {version}",
        "",
        "Logistic regression that flags fraudulent credit-card transactions. Trained by",
        "mini-batch gradient descent in pure Python on seeded synthetic data, as the",
        "mlbuild fraud example. Not for use on real transactions.",
        "",
        "## Training data",
        "",
        f"- rows: {training['rows']} ({training['positives']} fraud)",
        f"- features: {len(model['features'])}",
        f"- final training loss: {training['final_loss']:.6f}",
        f"- training F1 at the chosen threshold: {training['train_f1']:.6f}",
        "",
        "## Hyperparameters",
        "",
        "| param | value |",
        "|---|---|",
    ]
    lines += [f"| `{k}` | `{value_text(params[k])}` |" for k in sorted(params)]
    lines += [
        "",
        f"Decision threshold: {model['threshold']:.6f} (predict fraud when p >= threshold).",
        "",
        "## Test metrics",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key in ("precision", "recall", "f1", "accuracy", "auc", "log_loss"):
        v = metrics[key]
        lines.append(f"| {key} | {'n/a' if v is None else f'{v:.6f}'} |")
    lines += [
        "",
        f"Confusion on {counts['rows']} test rows ({counts['positives']} fraud):",
        "",
        "| | predicted fraud | predicted legit |",
        "|---|---|---|",
        f"| fraud | {counts['tp']} | {counts['fn']} |",
        f"| legit | {counts['fp']} | {counts['tn']} |",
        "",
        "## Weights",
        "",
        "| feature | weight |",
        "|---|---|",
    ]
    lines += [f"| `{f}` | {w:+.6f} |" for f, w in zip(model["features"], model["weights"])]
    lines += [f"| (bias) | {model['bias']:+.6f} |", "", "## Files", ""]
    lines += [f"- `{fname}`: sha256 `{digest}`" for fname, digest in sorted(digests.items())]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model.json from the train stage")
    parser.add_argument("--metrics", required=True, help="metrics.json from the eval stage")
    parser.add_argument("--params", help="JSON file with name, version, min_f1")
    parser.add_argument("--out", required=True, help="output directory")
    args = parser.parse_args()

    params = dict(DEFAULT_PARAMS)
    if args.params:
        with open(args.params, encoding="utf-8") as f:
            params.update(json.load(f))

    model_bytes = read_bytes(args.model)
    metrics_bytes = read_bytes(args.metrics)
    model = json.loads(model_bytes)
    metrics = json.loads(metrics_bytes)
    if metrics["f1"] < params["min_f1"]:
        fail(
            f"test F1 {metrics['f1']:.4f} is below `min_f1` {params['min_f1']}; "
            "refusing to bundle this model"
        )

    os.makedirs(args.out, exist_ok=True)
    digests = {}
    for name, data in (("model.json", model_bytes), ("metrics.json", metrics_bytes)):
        with open(os.path.join(args.out, name), "wb") as f:
            f.write(data)
        digests[name] = hashlib.sha256(data).hexdigest()
    card = model_card(str(params["name"]), str(params["version"]), model, metrics, digests)
    with open(os.path.join(args.out, "MODEL_CARD.md"), "w", encoding="utf-8", newline="") as f:
        f.write(card)
    print(
        f"bundle: {params['name']} {params['version']}: test F1 {metrics['f1']:.4f}, "
        f"wrote model.json, metrics.json, MODEL_CARD.md"
    )


if __name__ == "__main__":
    main()
