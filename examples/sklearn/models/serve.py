#!/usr/bin/env python3
"""Score tumours with the breast cancer model in model.pkl.

This file ships inside the artifact next to model.pkl. It needs the Python
packages the model was trained with (the pins of envs/requirements.lock;
`packages.json` in the artifact lists what was installed), then:

    python serve.py --input samples.csv --output predictions.csv
    python serve.py < samples.csv > predictions.csv

The input is CSV with a header row holding the model's feature columns: the
layout of the features stage's output (the 30 measurements of cancer.csv plus
the features features/prepare.py engineers). Other columns are ignored, except
`sample_id`, which is copied to the output (else the 1-based row number).

The output is CSV: `sample_id,probability,malignant`, where `probability` has
6 decimals and `malignant` is probability >= the model's threshold (or
`--threshold`). A bad model file or bad arguments exit with 2, input that
cannot be scored with 1, each with a message on stderr.

model.pkl is a pickle, and unpickling runs code: load only a model you trust,
such as one from an artifact whose signature you have checked. evaluate.py
scores the test split through `load` and `predict_proba` here, so the metrics
shipped with the model are measured through exactly this code.
"""

import argparse
import os
import pickle
import sys

import numpy as np
import pandas as pd
import sklearn

MODEL_FORMAT = "mlbuild-example/sklearn-hgb/v1"
BUNDLE_KEYS = ["features", "format", "label", "model", "params", "threshold", "versions"]


class ModelError(Exception):
    """A model file this script cannot use."""


class InputError(Exception):
    """Input that cannot be scored; the message names the column."""


def load(path):
    """The model bundle train.py pickled: a dict of BUNDLE_KEYS."""
    try:
        with open(path, "rb") as f:
            bundle = pickle.load(f)
    except OSError as e:
        raise ModelError(f"cannot read it: {e.strerror}") from None
    except Exception as e:  # unpickling can raise almost anything
        raise ModelError(f"not a loadable pickle: {type(e).__name__}: {e}") from None
    if not isinstance(bundle, dict) or bundle.get("format") != MODEL_FORMAT:
        raise ModelError(f"not a {MODEL_FORMAT} model")
    missing = [k for k in BUNDLE_KEYS if k not in bundle]
    if missing:
        raise ModelError(f"malformed model: no `{missing[0]}`")
    trained_with = bundle["versions"].get("scikit-learn")
    if trained_with != sklearn.__version__:
        # A pickle is only guaranteed to mean the same thing under the version
        # that wrote it; the locked environment makes the two equal.
        print(
            f"warning: model trained with scikit-learn {trained_with}, "
            f"running {sklearn.__version__}",
            file=sys.stderr,
        )
    return bundle


def predict_proba(bundle, frame):
    """P(malignant) for each row of `frame`, a DataFrame with the model's features."""
    features = bundle["features"]
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise InputError(f"the input has no column `{missing[0]}`")
    x = frame[features]
    for c in features:
        if not pd.api.types.is_numeric_dtype(x[c]):
            bad = x[c][pd.to_numeric(x[c], errors="coerce").isna() & x[c].notna()]
            raise InputError(f"column `{c}`: expected a number, got {bad.iloc[0]!r}")
    # Column 1 is the positive class, `malignant` = 1.
    return bundle["model"].predict_proba(x.astype(np.float64))[:, 1]


def predictions(bundle, frame, threshold):
    """The output table: sample_id, probability, malignant."""
    probs = predict_proba(bundle, frame)
    ids = frame["sample_id"] if "sample_id" in frame.columns else np.arange(1, len(frame) + 1)
    return pd.DataFrame(
        {
            "sample_id": np.asarray(ids),
            "probability": probs,
            "malignant": (probs >= threshold).astype(int),
        }
    )


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=os.path.join(here, "model.pkl"), help="default: model.pkl next to this file"
    )
    parser.add_argument("--input", default="-", help="CSV to score (default: stdin)")
    parser.add_argument("--output", default="-", help="where to write predictions (default: stdout)")
    parser.add_argument("--threshold", type=float, help="override the model's decision threshold")
    args = parser.parse_args()

    try:
        bundle = load(args.model)
    except ModelError as e:
        print(f"error: model `{args.model}`: {e}", file=sys.stderr)
        sys.exit(2)
    threshold = bundle["threshold"] if args.threshold is None else args.threshold
    try:
        frame = pd.read_csv(sys.stdin if args.input == "-" else args.input)
        table = predictions(bundle, frame, threshold)
    except (InputError, OSError, ValueError) as e:
        print(f"error: input `{args.input}`: {e}", file=sys.stderr)
        sys.exit(1)

    text = table.to_csv(index=False, float_format="%.6f", lineterminator="\n")
    if args.output == "-":
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:
            # The reader stopped early (`| head`): not an error. Point stdout at
            # /dev/null so the interpreter's final flush does not fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    n = int(table["malignant"].sum())
    print(f"serve: {len(table)} samples scored, {n} predicted malignant -> {args.output}")


if __name__ == "__main__":
    main()
