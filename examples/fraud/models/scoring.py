"""Binary-classification metrics, shared by train.py (on the validation split)
and evaluate.py (on the test split), so both report the same numbers the same
way.

Every value is rounded to DIGITS decimals, so metrics files are byte-for-byte
stable and small differences in the last bits of `math.log` between platforms
do not show.
"""

import math

DIGITS = 6


def best_f1_threshold(probs, ys):
    """Threshold (predict 1 iff p >= t) that maximizes F1; ties go to the higher t."""
    pairs = sorted(zip(probs, ys), reverse=True)
    positives = sum(ys)
    tp = fp = 0
    best_f1, best_t = -1.0, 0.5
    i = 0
    while i < len(pairs):
        t = pairs[i][0]
        # Take every example with this exact score at once.
        while i < len(pairs) and pairs[i][0] == t:
            tp += pairs[i][1]
            fp += 1 - pairs[i][1]
            i += 1
        f1 = 2 * tp / (2 * tp + fp + (positives - tp)) if positives else 0.0
        if f1 > best_f1:
            best_f1, best_t = f1, t
    return best_t, best_f1


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


def _ratio(num, den):
    return num / den if den else 0.0


def classification_metrics(probs, ys, threshold, split):
    """Precision, recall, F1, accuracy, ROC AUC, log loss and confusion counts."""
    tp = sum(1 for p, y in zip(probs, ys) if p >= threshold and y == 1)
    fp = sum(1 for p, y in zip(probs, ys) if p >= threshold and y == 0)
    fn = sum(1 for p, y in zip(probs, ys) if p < threshold and y == 1)
    tn = len(ys) - tp - fp - fn
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    f1 = _ratio(2 * precision * recall, precision + recall)
    eps = 1e-12
    loss = -math.fsum(
        y * math.log(min(max(p, eps), 1 - eps)) + (1 - y) * math.log(min(max(1 - p, eps), 1 - eps))
        for p, y in zip(probs, ys)
    ) / len(ys)
    auc = roc_auc(probs, ys)
    return {
        "split": split,
        "threshold": round(threshold, DIGITS),
        "precision": round(precision, DIGITS),
        "recall": round(recall, DIGITS),
        "f1": round(f1, DIGITS),
        "accuracy": round(_ratio(tp + tn, len(ys)), DIGITS),
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


def summary_line(m):
    auc = "n/a" if m["auc"] is None else f"{m['auc']:.4f}"
    return (
        f"{m['counts']['rows']} {m['split']} rows, precision {m['precision']:.4f}, "
        f"recall {m['recall']:.4f}, F1 {m['f1']:.4f}, AUC {auc}"
    )
