#!/usr/bin/env python3
"""Train a gradient-boosted trees classifier for malignant tumours.

scikit-learn's HistGradientBoostingClassifier on every feature column of
train.csv. It is deterministic here because every source of variation is
pinned: `random_state` comes from the params, `early_stopping=False` keeps all
of train.csv for fitting (no random internal validation split), the thread
count is fixed by OMP_NUM_THREADS (mlbuild sets it to the target's declared
cpu count), and the library versions by the environment's lock file.

The model is then scored on the validation split, which it was not trained on,
and those metrics are what the sweep's selection compares (`select` in
BUILD.toml): the variant with the best validation F1 wins. The test split is
never read here.

Params come from the `train` table of the JSON file at `--params`: mlbuild
fills it from params.toml's `train.*` keys and the swept `train.learning_rate`
and `train.max_depth` of this variant.

Outputs in <out>/: model.pkl (a pickled dict: the fitted estimator, its
feature list, decision threshold, params and library versions; serve.py loads
it) and val_metrics.json.
"""

import argparse
import json
import os
import pickle
import sys

import numpy as np
import pandas as pd
import sklearn
from sklearn.ensemble import HistGradientBoostingClassifier

from scoring import classification_metrics, summary_line

# serve.py refuses any other format; kept in step by hand so that editing
# serve.py does not retrain every variant.
MODEL_FORMAT = "mlbuild-example/sklearn-hgb/v1"

DEFAULT_PARAMS = {
    "learning_rate": 0.1,
    "max_depth": 3,
    "max_iter": 200,
    "l2_regularization": 0.0,
    "random_state": 42,
}
ID, LABEL = "sample_id", "malignant"
THRESHOLD = 0.5


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def load_params(path):
    params = dict(DEFAULT_PARAMS)
    if path:
        with open(path, encoding="utf-8") as f:
            params.update(json.load(f).get("train", {}))
    unknown = sorted(set(params) - set(DEFAULT_PARAMS))
    if unknown:
        fail(f"unknown param `train.{unknown[0]}`; known: {sorted(DEFAULT_PARAMS)}")
    if not is_number(params["learning_rate"]) or params["learning_rate"] <= 0:
        fail(f"param `train.learning_rate` must be a positive number, got {params['learning_rate']!r}")
    if not is_number(params["l2_regularization"]) or params["l2_regularization"] < 0:
        fail(f"param `train.l2_regularization` must be >= 0, got {params['l2_regularization']!r}")
    for key in ("max_depth", "max_iter"):
        if not is_int(params[key]) or params[key] < 1:
            fail(f"param `train.{key}` must be a positive integer, got {params[key]!r}")
    if not is_int(params["random_state"]):
        fail(f"param `train.random_state` must be an integer, got {params['random_state']!r}")
    return params


def load_split(path, features=None):
    frame = pd.read_csv(path)
    if LABEL not in frame.columns:
        fail(f"`{os.path.basename(path)}` has no column `{LABEL}`")
    columns = [c for c in frame.columns if c not in (ID, LABEL)]
    if features is not None and columns != features:
        fail(f"`{os.path.basename(path)}` has other feature columns than train.csv")
    return columns, frame[columns].astype(np.float64), frame[LABEL].astype(int)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True, help="train.csv from the features stage")
    parser.add_argument("--val", required=True, help="val.csv from the features stage")
    parser.add_argument("--params", help='JSON file: {"train": {learning_rate, max_depth, ...}}')
    parser.add_argument("--out", required=True, help="output directory")
    args = parser.parse_args()

    params = load_params(args.params)
    features, x, y = load_split(args.train)
    _, val_x, val_y = load_split(args.val, features)
    if sorted(y.unique()) != [0, 1]:
        fail("training data must contain both classes")

    model = HistGradientBoostingClassifier(
        learning_rate=float(params["learning_rate"]),
        max_depth=params["max_depth"],
        max_iter=params["max_iter"],
        l2_regularization=float(params["l2_regularization"]),
        random_state=params["random_state"],
        early_stopping=False,
    )
    model.fit(x, y)
    val_metrics = classification_metrics(val_y, model.predict_proba(val_x)[:, 1], THRESHOLD)

    bundle = {
        "format": MODEL_FORMAT,
        "model": model,
        "features": features,
        "label": LABEL,
        "threshold": THRESHOLD,
        "params": params,
        # What unpickling needs to mean the same thing. Python by minor version
        # only, so the bytes do not depend on the interpreter's patch release.
        "versions": {
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "python": f"{sys.version_info.major}.{sys.version_info.minor}",
            "scikit-learn": sklearn.__version__,
        },
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "model.pkl"), "wb") as f:
        # A fixed protocol: the default may change with the Python version.
        pickle.dump(bundle, f, protocol=5)
    with open(os.path.join(args.out, "val_metrics.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(val_metrics, sort_keys=True, indent=2) + "\n")
    print(
        f"train: learning_rate {params['learning_rate']}, max_depth {params['max_depth']}, "
        f"{model.n_iter_} iterations on {len(y)} rows; val: {summary_line(val_metrics)}"
    )


if __name__ == "__main__":
    main()
