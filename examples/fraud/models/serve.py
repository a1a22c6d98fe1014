#!/usr/bin/env python3
"""Score credit-card transactions with the fraud model in model.json.

This file ships inside the artifact next to model.json, so from an unpacked
artifact:

    ./serve.py < transactions.csv > scores.csv
    echo '{"amount": 950, "hour": 3, "merchant_category": "jewelry", "distance_km": 800,
           "card_present": 0, "velocity_24h": 9}' | ./serve.py

Input (stdin) is either CSV with a header row (the columns of transactions.csv;
`transaction_id` is optional and `is_fraud`, if present, is ignored) or JSON:
one object per line, or one array of objects. The output follows the input:

- CSV in, CSV out: `transaction_id,probability,fraud` (the row number when
  there is no `transaction_id` column);
- JSON in, one JSON object per line out: `{"fraud": true, "id": ...,
  "probability": 0.93}` (`id` is the object's `transaction_id`, else its
  1-based position).

`probability` has 6 decimals; `fraud` is probability >= the model's threshold
(or `--threshold`). A row that cannot be scored stops the run with exit code 1
and a message naming its line and column; a bad model file or bad arguments
exit with 2.

Only Python's standard library is used. evaluate.py imports this module to
score the test split, so the metrics shipped with the model are measured
through exactly this code.
"""

import argparse
import csv
import itertools
import json
import math
import os
import sys

MODEL_FORMAT = "mlbuild-example/logistic-regression/v1"
INPUT_COLUMNS = [
    "amount",
    "hour",
    "merchant_category",
    "distance_km",
    "card_present",
    "velocity_24h",
]


class InputError(Exception):
    """A row that cannot be scored; the message names the column."""


class ModelError(Exception):
    """A model file this script cannot use."""


def _number(value, column, lo=None, hi=None, integer=False):
    if isinstance(value, bool):
        raise InputError(f"column `{column}`: expected a number, got {json.dumps(value)}")
    if isinstance(value, str):
        try:
            value = int(value) if integer else float(value)
        except ValueError:
            kind = "an integer" if integer else "a number"
            raise InputError(f"column `{column}`: expected {kind}, got {value!r}") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"column `{column}`: expected a number, got {value!r}")
    if integer and value != int(value):
        raise InputError(f"column `{column}`: expected an integer, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise InputError(f"column `{column}`: {value!r} is outside [{lo}, {hi}]")
    return int(value) if integer else float(value)


def _flag(value, column):
    if isinstance(value, bool):
        return int(value)
    text = str(value).strip().lower()
    if text in ("1", "true"):
        return 1
    if text in ("0", "false"):
        return 0
    raise InputError(f"column `{column}`: expected 0/1 or true/false, got {value!r}")


def parse_row(raw):
    """Typed transaction fields from a dict of CSV strings or JSON values."""
    missing = [c for c in INPUT_COLUMNS if raw.get(c) is None or raw.get(c) == ""]
    if missing:
        raise InputError(f"column `{missing[0]}` is missing or empty")
    return {
        "amount": _number(raw["amount"], "amount", lo=0),
        "hour": _number(raw["hour"], "hour", lo=0, hi=23, integer=True),
        "merchant_category": str(raw["merchant_category"]),
        "distance_km": _number(raw["distance_km"], "distance_km", lo=0),
        "card_present": _flag(raw["card_present"], "card_present"),
        "velocity_24h": _number(raw["velocity_24h"], "velocity_24h", lo=0),
    }


def _sigmoid(z):
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class Model:
    """model.json: the preprocessing of feature_stats.json and the weights."""

    def __init__(self, doc):
        try:
            if doc.get("format") != MODEL_FORMAT:
                raise ModelError(f"format is {doc.get('format')!r}, expected {MODEL_FORMAT!r}")
            self.features = list(doc["features"])
            self.weights = [float(w) for w in doc["weights"]]
            self.bias = float(doc["bias"])
            self.threshold = float(doc["threshold"])
            pre = doc["preprocessing"]
            # feature name -> function of a parsed row, built from the
            # transform prepare.py fitted (and must compute identically).
            encoders = {}
            for name, spec in pre["numeric"].items():
                encoders[name] = self._numeric(spec)
            for source, spec in pre["cyclic"].items():
                sin_name, cos_name = spec["features"]
                period = spec["period"]
                encoders[sin_name] = lambda r, s=source, p=period: math.sin(2.0 * math.pi * r[s] / p)
                encoders[cos_name] = lambda r, s=source, p=period: math.cos(2.0 * math.pi * r[s] / p)
            for source in pre["passthrough"]:
                encoders[source] = lambda r, s=source: float(r[s])
            for source, spec in pre["one_hot"].items():
                # A value unseen in training encodes as all zeros.
                for name, v in zip(spec["features"], spec["values"]):
                    encoders[name] = lambda r, s=source, v=v: 1.0 if r[s] == v else 0.0
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(f"malformed model: {type(e).__name__}: {e}") from None
        unknown = [f for f in self.features if f not in encoders]
        if unknown:
            raise ModelError(f"no preprocessing for feature `{unknown[0]}`")
        if len(self.weights) != len(self.features):
            raise ModelError(f"{len(self.weights)} weights for {len(self.features)} features")
        self.encoders = [encoders[f] for f in self.features]

    @staticmethod
    def _numeric(spec):
        fn = {"log1p": math.log1p, "identity": float}.get(spec["fn"])
        if fn is None:
            raise ModelError(f"unknown numeric transform `{spec['fn']}`")
        source, mean, std = spec["source"], float(spec["mean"]), float(spec["std"])
        return lambda r: (fn(r[source]) - mean) / std

    def encode(self, row):
        return [enc(row) for enc in self.encoders]

    def probability(self, row):
        """P(fraud) for a parsed row (see `parse_row`)."""
        x = self.encode(row)
        return _sigmoid(self.bias + math.fsum(map(float.__mul__, self.weights, x)))


def load_model(path):
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        raise ModelError(f"cannot read it: {e.strerror}") from None
    except ValueError as e:
        raise ModelError(f"not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ModelError("not a JSON object")
    return Model(doc)


def _score_csv(model, threshold, first_line, lines, out):
    reader = csv.DictReader(itertools.chain([first_line], lines))
    missing = [c for c in INPUT_COLUMNS if c not in reader.fieldnames]
    if missing:
        raise InputError(f"line 1: the CSV header has no column `{missing[0]}`")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["transaction_id", "probability", "fraud"])
    for n, raw in enumerate(reader, start=1):
        try:
            p = model.probability(parse_row(raw))
        except InputError as e:
            raise InputError(f"line {reader.line_num}: {e}") from None
        row_id = raw.get("transaction_id") or n
        writer.writerow([row_id, f"{p:.6f}", int(p >= threshold)])


def _score_json(model, threshold, objects, out):
    for n, (where, raw) in enumerate(objects, start=1):
        if not isinstance(raw, dict):
            raise InputError(f"{where}: expected a JSON object, got {json.dumps(raw)}")
        try:
            p = model.probability(parse_row(raw))
        except InputError as e:
            raise InputError(f"{where}: {e}") from None
        row_id = raw.get("transaction_id", n)
        record = {"id": row_id, "probability": round(p, 6), "fraud": p >= threshold}
        out.write(json.dumps(record, sort_keys=True) + "\n")


def _json_lines(first_line, lines):
    for line_no, line in enumerate(itertools.chain([first_line], lines), start=1):
        if line.strip():
            try:
                yield f"line {line_no}", json.loads(line)
            except ValueError as e:
                raise InputError(f"line {line_no}: not JSON: {e}") from None


def score_stream(model, threshold, inp, out):
    """Scores CSV or JSON from `inp` onto `out`; the first character decides which."""
    first = ""
    for first in inp:
        if first.strip():
            break
    if not first.strip():
        return
    head = first.lstrip()[0]
    if head == "[":
        try:
            doc = json.loads(first + inp.read())
        except ValueError as e:
            raise InputError(f"input is not a JSON array: {e}") from None
        _score_json(model, threshold, ((f"element {i}", o) for i, o in enumerate(doc, 1)), out)
    elif head == "{":
        _score_json(model, threshold, _json_lines(first, inp), out)
    else:
        _score_csv(model, threshold, first, inp, out)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=os.path.join(here, "model.json"), help="default: model.json next to this file"
    )
    parser.add_argument("--threshold", type=float, help="override the model's decision threshold")
    args = parser.parse_args()
    try:
        model = load_model(args.model)
    except ModelError as e:
        print(f"error: model `{args.model}`: {e}", file=sys.stderr)
        sys.exit(2)
    threshold = model.threshold if args.threshold is None else args.threshold
    try:
        score_stream(model, threshold, sys.stdin, sys.stdout)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except BrokenPipeError:
        # The reader stopped early (`| head`): not an error. Point stdout at
        # /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    main()
