#!/usr/bin/env python3
"""Write scikit-learn's bundled breast cancer dataset as cancer.csv.

The Wisconsin diagnostic breast cancer data (569 tumours, 30 measurements of
cell nuclei each) ships inside the scikit-learn wheel, so this stage reads a
file of the locked environment and never touches the network: the pin of
scikit-learn in envs/requirements.lock is what fixes the data.

The columns are renamed to snake_case (`mean radius` -> `mean_radius`) so that
they are plain identifiers downstream, a `sample_id` (the row number in the
dataset) is added first, and the label is turned around: scikit-learn codes
malignant as 0 and benign as 1, while the question this pipeline answers is
"is it malignant?", so the last column is `malignant` (1 = malignant).

Output: <out>/cancer.csv. The same environment always gives the same bytes:
floats are written with a fixed format ("%.10g" round-trips every value of the
dataset, which has at most 4 significant digits), "\n" line endings.
"""

import argparse
import os
import sys

from sklearn.datasets import load_breast_cancer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory")
    args = parser.parse_args()

    # as_frame=True: a DataFrame with the dataset's own column names, in the
    # dataset's row order.
    bunch = load_breast_cancer(as_frame=True)
    features = bunch.data.rename(columns=lambda c: c.replace(" ", "_"))
    if list(bunch.target_names) != ["malignant", "benign"]:
        sys.exit(f"error: unexpected target names {list(bunch.target_names)}")

    frame = features.copy()
    frame.insert(0, "sample_id", range(len(frame)))
    frame["malignant"] = (bunch.target == 0).astype(int)

    os.makedirs(args.out, exist_ok=True)
    frame.to_csv(
        os.path.join(args.out, "cancer.csv"), index=False, float_format="%.10g", lineterminator="\n"
    )
    print(
        f"load: {len(frame)} samples ({int(frame['malignant'].sum())} malignant), "
        f"{features.shape[1]} features"
    )


if __name__ == "__main__":
    main()
