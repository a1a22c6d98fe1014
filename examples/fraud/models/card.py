#!/usr/bin/env python3
"""Write MODEL_CARD.md for the selected fraud model.

Reads what the pipeline produced, and nothing else: model.json (weights,
threshold, hyperparameters), selection.json (the sweep and why this variant
won), metrics.json (the test split) and drift.json (the data against the
reference snapshot). Names and version come from the `card` table of the JSON
file at `--params`.

Output: <out>/MODEL_CARD.md. Numbers are formatted with fixed digits and every
table is in a fixed order, so the same inputs give the same bytes.
"""

import argparse
import json
import os
import sys

DEFAULT_PARAMS = {"name": "fraud-detector", "version": "0.0.0"}


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def load_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        fail(f"cannot read `{path}`: {e}")


def load_params(path):
    params = dict(DEFAULT_PARAMS)
    if path:
        params.update(load_json(path).get("card", {}))
    unknown = sorted(set(params) - set(DEFAULT_PARAMS))
    if unknown:
        fail(f"unknown param `card.{unknown[0]}`; known: {sorted(DEFAULT_PARAMS)}")
    return params


def value_text(v):
    """A param value in its JSON spelling (stable, and unambiguous about types)."""
    return json.dumps(v, sort_keys=True)


def number(v, digits=4):
    return "n/a" if v is None else f"{v:.{digits}f}"


def variant_text(params):
    return ", ".join(f"`{k}` = `{value_text(v)}`" for k, v in sorted(params.items()))


def data_section(drift):
    rows = drift["rows"]
    t = drift["thresholds"]
    lines = [
        "## Data",
        "",
        "Seeded synthetic transactions from `data/generate.py` (the `data` table of",
        "`params.toml`), checked against `data/transactions.schema.toml` before training.",
        f"Drift against the committed reference snapshot ({rows['data']} rows against",
        f"{rows['reference']}): **{drift['verdict']}**. A column fails at PSI >= {t['psi_fail']}",
        f"or Jensen-Shannon distance >= {t['js_fail']}.",
        "",
        "| column | kind | status | drift |",
        "|---|---|---|---|",
    ]
    for name in sorted(drift["columns"]):
        c = drift["columns"][name]
        if c["kind"] == "numeric":
            measure = f"PSI {number(c.get('psi'))}, KS {number(c.get('ks'))}"
        elif c["kind"] == "categorical":
            measure = f"JS {number(c.get('js'))}"
        else:
            measure = c.get("note") or "-"
        lines.append(f"| `{name}` | {c['kind']} | {c['status']} | {measure} |")
    return lines


def selection_section(selection):
    n = len(selection["variants"])
    lines = [
        "## Model selection",
        "",
        f"A sweep over {', '.join(f'`{k}`' for k in sorted(selection['params']))} trained {n} variants,",
        f"compared by `{selection['metric']}` on the validation split (goal: {selection['goal']}),",
        "which none of them was trained on. The test split played no part in the choice.",
        "",
        f"Selected: `{selection['selected']}`: {selection['reason']}.",
        "",
        f"| variant | validation {selection['metric']} | |",
        "|---|---|---|",
    ]
    for v in selection["variants"]:
        mark = "selected" if v["label"] == selection["selected"] else ""
        lines.append(f"| {variant_text(v['params'])} | {number(v['value'])} | {mark} |")
    return lines


def model_card(params, model, selection, metrics, drift):
    training = model["training"]
    counts = metrics["counts"]
    lines = [
        f"# Model card: {params['name']} {params['version']}",
        "",
        "Logistic regression that flags fraudulent credit-card transactions, trained by",
        "mini-batch gradient descent in pure Python on seeded synthetic data as the mlbuild",
        "fraud example. **Not for use on real transactions.**",
        "",
        "## Use",
        "",
        "`serve.py` in this artifact scores transactions with `model.json` (Python 3",
        "standard library only): CSV with a header or JSON objects on stdin, one",
        "probability and decision per row on stdout.",
        "",
        "```sh",
        "./serve.py < transactions.csv > scores.csv",
        "```",
        "",
        "Input columns: `amount`, `hour` (0-23), `merchant_category`, `distance_km`,",
        "`card_present` (0/1), `velocity_24h` (transactions on the card in the last 24 hours).",
        "",
    ]
    lines += data_section(drift)
    lines += [""]
    lines += selection_section(selection)
    lines += [
        "",
        "## Hyperparameters",
        "",
        "| param | value |",
        "|---|---|",
    ]
    lines += [f"| `{k}` | `{value_text(model['params'][k])}` |" for k in sorted(model["params"])]
    lines += [
        "",
        f"Trained on {training['rows']} rows ({training['positives']} fraud): final training",
        f"loss {training['final_loss']:.6f}, training F1 {training['train_f1']:.6f}.",
        f"Decision threshold {model['threshold']:.6f}: a transaction is flagged when its",
        "probability is at least that.",
        "",
        "## Test metrics",
        "",
        f"On the held-out test split ({counts['rows']} transactions, {counts['positives']} fraud),",
        "scored through `serve.py`:",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key in ("precision", "recall", "f1", "accuracy", "auc", "log_loss"):
        lines.append(f"| {key} | {number(metrics[key], 6)} |")
    lines += [
        "",
        "| | predicted fraud | predicted legitimate |",
        "|---|---|---|",
        f"| fraud | {counts['tp']} | {counts['fn']} |",
        f"| legitimate | {counts['fp']} | {counts['tn']} |",
        "",
        "## Weights",
        "",
        "| feature | weight |",
        "|---|---|",
    ]
    lines += [f"| `{f}` | {w:+.6f} |" for f, w in zip(model["features"], model["weights"])]
    lines += [
        f"| (bias) | {model['bias']:+.6f} |",
        "",
        "## Verifying this artifact",
        "",
        "`manifest.json` lists every file with its SHA-256. When the artifact was built with a",
        "signing key, `model.sig` signs all of them (OpenSSF `model_signing` format):",
        "",
        "```sh",
        "mlbuild verify fraud.tar.zst --key signer.pub",
        "model_signing verify key fraud --signature fraud/model.sig --public_key signer.pub",
        "```",
    ]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model.json of the selected variant")
    parser.add_argument("--selection", required=True, help="selection.json of the sweep")
    parser.add_argument("--metrics", required=True, help="metrics.json of the evaluation")
    parser.add_argument("--drift", required=True, help="drift.json of the drift check")
    parser.add_argument("--params", help='JSON file: {"card": {name, version}}')
    parser.add_argument("--out", required=True, help="output directory")
    args = parser.parse_args()

    params = load_params(args.params)
    model = load_json(args.model)
    selection = load_json(args.selection)
    metrics = load_json(args.metrics)
    drift = load_json(args.drift)
    try:
        card = model_card(params, model, selection, metrics, drift)
    except (KeyError, TypeError, ValueError) as e:
        fail(f"an input lacks what the card needs: {type(e).__name__}: {e}")

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "MODEL_CARD.md"), "w", encoding="utf-8", newline="") as f:
        f.write(card)
    print(
        f"card: {params['name']} {params['version']}: {selection['selected']}, "
        f"test F1 {metrics['f1']:.4f}, drift {drift['verdict']}"
    )


if __name__ == "__main__":
    main()
