"""What the paper's tables report: accuracy, macro/weighted F1, log loss, per-genre F1,
confusion matrices; printed as tables and drawn as PNG."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def compute_metrics(y_true: np.ndarray, probs: np.ndarray, genres: Sequence[str]) -> dict[str, Any]:
    """Metrics of probabilities [shape=(n, n_genres)] against integer labels [shape=(n,)].

    Macro F1 averages over the genres present in ``y_true`` (a genre the data does not
    hold has no defined recall); ``per_genre`` lists every genre that is either true
    or predicted at least once. ``log_loss`` is the mean negative log-probability of
    the true genre (probabilities clipped at 1e-15).
    """
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    y_true = np.asarray(y_true, dtype=np.int64)
    n = len(y_true)
    if n == 0:
        return {"n": 0}
    probs = np.asarray(probs, dtype=np.float64)
    y_pred = probs.argmax(axis=1)
    labels = list(range(len(genres)))
    present = sorted(set(y_true.tolist()))
    p_true = np.clip(probs[np.arange(n), y_true], 1e-15, 1.0)
    prec, rec, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    shown = sorted(set(present) | set(y_pred.tolist()))
    return {
        "n": int(n),
        "accuracy": float((y_pred == y_true).mean()),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=present, average="weighted", zero_division=0)),
        "log_loss": float(-np.log(p_true).mean()),
        "chance_accuracy": float(np.bincount(y_true).max() / n),
        "per_genre": {
            genres[i]: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
                        "support": int(support[i])}
            for i in shown
        },
        "confusion": {"labels": list(genres),
                      "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist()},
    }


def _fmt(value: Any, width: int = 8) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-".rjust(width)
    if isinstance(value, float):
        return f"{value:.3f}".rjust(width)
    return str(value).rjust(width)


def format_report(results: dict[str, dict[str, Any]], genres: Sequence[str]) -> str:
    """Summary table (one row per mode) and Table 2's per-genre F1 (one column per mode)."""
    modes = [m for m in ("audio", "lyrics", "fused") if results.get(m, {}).get("n")]
    lines = [f"{'mode':<8} {'n':>6} {'accuracy':>9} {'macro F1':>9} {'wtd F1':>9} {'log loss':>9}"]
    for m in modes:
        r = results[m]
        lines.append(f"{m:<8} {r['n']:>6} {r['accuracy']:>9.3f} {r['macro_f1']:>9.3f} "
                     f"{r['weighted_f1']:>9.3f} {r['log_loss']:>9.3f}")
    if modes:
        width = max([len(g) for g in genres] + [5])
        lines.append("")
        lines.append("per-genre F1".ljust(width) + "".join(f"{m:>9}" for m in modes) + f"{'support':>9}")
        for g in genres:
            cells = [results[m]["per_genre"].get(g) for m in modes]
            if not any(cells):
                continue
            support = max((c or {}).get("support", 0) for c in cells)
            lines.append(g.ljust(width) + "".join(
                _fmt(c["f1"], 9) if c and c["support"] else "-".rjust(9) for c in cells) + f"{support:>9}")
    return "\n".join(lines)


def save_confusion_png(metrics: dict[str, Any], path: str | Path, *, title: str = "") -> Path:
    """Row-normalised confusion matrix with counts, as a PNG (genres without examples left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = metrics["confusion"]["labels"]
    m = np.asarray(metrics["confusion"]["matrix"], dtype=np.int64)
    keep = [i for i in range(len(labels)) if m[i].sum() or m[:, i].sum()]
    m = m[np.ix_(keep, keep)]
    names = [labels[i] for i in keep]
    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.55 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(names)):
        for j in range(len(names)):
            if m[i, j]:
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title or f"accuracy {metrics['accuracy']:.3f}\nmacro F1 {metrics['macro_f1']:.3f}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


__all__ = ["compute_metrics", "format_report", "save_confusion_png"]
