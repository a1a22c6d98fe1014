"""Classification metrics shared by train.py (validation) and evaluate.py (test).

One function, so the number the sweep selects on and the number the gates check
are computed the same way. Every value is rounded to DIGITS decimals, so the
JSON files are byte-for-byte stable and small float noise never changes them.
"""

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, log_loss, precision_score, recall_score, roc_auc_score

DIGITS = 6


def classification_metrics(y, probs, threshold):
    """Metrics of P(malignant) `probs` against labels `y` (1 = malignant)."""
    y = np.asarray(y, dtype=int)
    probs = np.asarray(probs, dtype=np.float64)
    pred = (probs >= threshold).astype(int)
    values = {
        "accuracy": accuracy_score(y, pred),
        "auc": roc_auc_score(y, probs),
        "f1": f1_score(y, pred, zero_division=0),
        "log_loss": log_loss(y, probs, labels=[0, 1]),
        "precision": precision_score(y, pred, zero_division=0),
        "recall": recall_score(y, pred, zero_division=0),
    }
    metrics = {k: round(float(v), DIGITS) for k, v in values.items()}
    metrics.update(
        rows=int(len(y)),
        positives=int(y.sum()),
        threshold=float(threshold),
        tp=int(((pred == 1) & (y == 1)).sum()),
        fp=int(((pred == 1) & (y == 0)).sum()),
        fn=int(((pred == 0) & (y == 1)).sum()),
        tn=int(((pred == 0) & (y == 0)).sum()),
    )
    return metrics


def summary_line(m):
    return (
        f"F1 {m['f1']:.4f}, AUC {m['auc']:.4f}, accuracy {m['accuracy']:.4f} "
        f"on {m['rows']} rows ({m['positives']} malignant)"
    )
