"""The audio head of a nested-layout model, fitted on what inference feeds it.

Inference (``mmgenre_core.listening``) classifies the mean of the windows a track was
heard at: two, and on unsure tracks five or eleven. So the head is fitted on those
means: every clip gives one row per window count of ``counts`` (the row's weight a
share of the clip's), over the frozen backbone's features of each window. The L2
penalty and the temperature come from an inner cross-validation grouped by artist (no
split is held out of the final fit: the cross-validation is its estimate), and the
listening plans are chosen on the same out-of-fold answers.

``benchmarks/cv_windows.py`` runs this inside each outer fold; ``training/train.py``
runs it on all the data for the shipped model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from mmgenre_core.calibration import fit_temperature
from mmgenre_core.head import Block, fit_head
from mmgenre_core.listening import ListeningPlan, rounds_up_to, window_count_rows

log = logging.getLogger(__name__)


@dataclass
class WindowHead:
    """A fitted head: weight [shape=(genres, dim)], bias [shape=(genres,)], temperature."""

    weight: np.ndarray
    bias: np.ndarray
    temperature: float
    l2: float
    #: inner cross-validation: l2 -> out-of-fold log loss (after temperature scaling)
    inner: dict[str, float] = field(default_factory=dict)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """x [shape=(rows, dim)] -> [shape=(rows, genres)]."""
        return x @ self.weight.T + self.bias

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        z = self.logits(x) / self.temperature
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


def class_weights(labels: np.ndarray, n_classes: int, *, power: float) -> np.ndarray:
    """Per-example weights [shape=(len(labels),)]: ``(n / (k * count)) ** power`` of the genre."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    present = np.count_nonzero(counts)
    per_genre = np.where(counts > 0, len(labels) / (present * np.maximum(counts, 1)), 0.0) ** power
    return per_genre[labels]


def _fit(rows: np.ndarray, labels: np.ndarray, weights: np.ndarray, *, l2: float, n_classes: int,
         max_iter: int) -> tuple[np.ndarray, np.ndarray]:
    """rows [shape=(clips, counts, dim)] -> (weight, bias) of weighted L2 logistic regression."""
    clips, k, dim = rows.shape
    x = torch.from_numpy(np.ascontiguousarray(rows.reshape(clips * k, dim), dtype=np.float32))
    y = torch.from_numpy(np.repeat(labels, k).astype(np.int64))
    w = torch.from_numpy(np.repeat(weights / k, k))
    weight, bias = fit_head(x, y, w, blocks=[Block("audio", 0, dim, True)], l2=[l2], n_classes=n_classes,
                            max_iter=max_iter)
    return weight.double().numpy(), bias.double().numpy()


def _inner_folds(labels: np.ndarray, groups: np.ndarray, *, folds: int, seed: int) -> list[np.ndarray]:
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [test for _, test in splitter.split(np.zeros(len(labels)), labels, groups)]


def fit_window_head(features: np.ndarray, labels: np.ndarray, groups: Sequence[str], *, order: list[int],
                    counts: list[int], n_classes: int, l2_grid: Sequence[float] = (0.01, 0.03, 0.1, 0.3, 1.0),
                    power: float = 0.5, inner_folds: int = 4, seed: int = 0, max_iter: int = 300,
                    select: str = "accuracy") -> tuple[WindowHead, dict[str, np.ndarray]]:
    """Fit the head on all clips, L2 and temperature from an inner artist-grouped CV.

    ``select``: what picks the L2 on the out-of-fold answers (over every window
    count's rows): ``"accuracy"`` or ``"log_loss"`` (class-weighted, after temperature
    scaling; it favoured penalties too small for accuracy on the real clips).

    features [shape=(clips, windows, dim)] (NaN rows: windows a clip is too short for),
    labels [shape=(clips,)] genre indices, groups: each clip's artist. Returns the head
    and the inner CV's out-of-fold logits of the chosen L2, ``{"logits": [shape=(clips,
    len(counts), genres)]}``, from which plans are chosen.
    """
    labels = np.asarray(labels, dtype=np.int64)
    groups = np.asarray(groups)
    rows = window_count_rows(features, order, counts)  # (clips, len(counts), dim)
    weights = class_weights(labels, n_classes, power=power)
    folds = _inner_folds(labels, groups, folds=inner_folds, seed=seed)
    oof: dict[float, np.ndarray] = {}
    for l2 in l2_grid:
        out = np.zeros((len(labels), len(counts), n_classes))
        for test in folds:
            train = np.setdiff1d(np.arange(len(labels)), test)
            w, b = _fit(rows[train], labels[train], weights[train], l2=l2, n_classes=n_classes, max_iter=max_iter)
            out[test] = rows[test] @ w.T + b
        oof[l2] = out
    inner: dict[str, float] = {}
    temps: dict[float, float] = {}
    flat_labels = np.repeat(labels, len(counts))
    track = np.arange(len(flat_labels))
    for l2, z in oof.items():
        flat = z.reshape(-1, n_classes)
        t = fit_temperature(flat, track, flat_labels)
        temps[l2] = t
        p = _softmax(flat / t)
        # The weighted log loss: what the fit minimises, so a genre of few clips counts as trained.
        w = np.repeat(weights, len(counts))
        if select == "accuracy":  # lower is better: the share of rows wrong
            inner[f"{l2:g}"] = float((p.argmax(1) != flat_labels).mean())
        else:
            inner[f"{l2:g}"] = float(-(w * np.log(np.maximum(p[track, flat_labels], 1e-12))).sum() / w.sum())
    # Ties (a few clips' worth of accuracy is noise) go to the larger penalty.
    best = min(sorted(l2_grid, reverse=True), key=lambda c: round(inner[f"{c:g}"], 3))
    weight, bias = _fit(rows, labels, weights, l2=best, n_classes=n_classes, max_iter=max_iter)
    log.info("window head: l2 %g (inner out-of-fold %s %s), temperature %.3f", best,
             "error rate" if select == "accuracy" else "weighted log loss",
             {k: round(v, 4) for k, v in inner.items()}, temps[best])
    return WindowHead(weight, bias, temps[best], best, inner), {"logits": oof[best]}


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def listen(count_probs: np.ndarray, plan: ListeningPlan, *, counts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """What a plan answers: count_probs [shape=(clips, len(counts), genres)], each clip's
    calibrated probabilities after each round end of ``counts`` -> (the probabilities
    the plan stops at [shape=(clips, genres)], windows heard [shape=(clips,)])."""
    stops = rounds_up_to(counts, plan.max_windows)
    index = [counts.index(s) for s in stops]
    clips = count_probs.shape[0]
    at = np.zeros(clips, dtype=np.int64)  # position in ``index``
    for step in range(len(index) - 1):
        unsure = (at == step) & plan.unsure(count_probs[np.arange(clips), index[step]].max(axis=1))
        at[unsure] = step + 1
    chosen = np.array(index)[at]
    return count_probs[np.arange(clips), chosen], np.array(stops)[at]


def plan_table(count_probs: np.ndarray, labels: np.ndarray, *, counts: list[int],
               thresholds: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)) -> list[dict[str, Any]]:
    """Accuracy and mean windows of every plan (max_windows in ``counts`` past the first,
    each threshold; and each count heard always) on out-of-fold answers."""
    plans = [ListeningPlan(counts[0], 0.0)]
    plans += [ListeningPlan(m, t) for m in counts[1:] for t in thresholds]
    out = []
    for plan in plans:
        probs, heard = listen(count_probs, plan, counts=counts)
        out.append({**plan.to_dict(), "accuracy": float((probs.argmax(1) == labels).mean()),
                    "windows": float(heard.mean())})
    return out


def choose_plans(table: list[dict[str, Any]], *, fast_windows: int, budget_windows: float
                 ) -> dict[str, ListeningPlan]:
    """The named plans from a :func:`plan_table`: ``fast`` hears the first round only;
    ``balanced`` is the most accurate plan within ``budget_windows`` a track on average;
    ``thorough`` the most accurate of those that may hear every window (ties: fewer
    windows)."""
    def plan(row: dict[str, Any]) -> ListeningPlan:
        return ListeningPlan(int(row["max_windows"]), float(row["threshold"]))

    fast = next(r for r in table if r["max_windows"] == fast_windows and r["threshold"] == 0.0)
    within = [r for r in table if r["windows"] <= budget_windows + 1e-9] or [fast]
    balanced = max(within, key=lambda r: (round(r["accuracy"], 6), -r["windows"]))
    most = max(r["max_windows"] for r in table)
    thorough = max((r for r in table if r["max_windows"] == most), key=lambda r: (round(r["accuracy"], 6), -r["windows"]))
    return {"fast": plan(fast), "balanced": plan(balanced), "thorough": plan(thorough)}


__all__ = ["WindowHead", "choose_plans", "class_weights", "fit_window_head", "listen", "plan_table"]
