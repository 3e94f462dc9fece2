"""The audio head of a model that listens in rounds, fitted on what inference feeds it.

Inference (``mmgenre_core.listening``) classifies the mean of the windows a track was
heard at: two, and on unsure tracks five or twelve. So the head is fitted on those
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
from typing import Any, Callable, Sequence

import numpy as np
import torch

from mmgenre_core.calibration import fit_temperature, softmax
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
    #: inner cross-validation: l2 -> out-of-fold error rate
    inner: dict[str, float] = field(default_factory=dict)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """x [shape=(rows, dim)] -> [shape=(rows, genres)]."""
        return x @ self.weight.T + self.bias

    def calibrated(self, logits: np.ndarray) -> np.ndarray:
        """softmax(logits / temperature) over the last axis (any leading shape)."""
        return softmax(logits / self.temperature)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        return self.calibrated(self.logits(x))


def genre_weights(labels: np.ndarray, n_classes: int, *, power: float) -> np.ndarray:
    """The class weight of each genre [shape=(n_classes,)]: ``(n / (k * count)) ** power``
    over ``labels``, k the genres present (sklearn's "balanced", then a power); 0 for a
    genre absent from ``labels``."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    present = np.count_nonzero(counts)
    return np.where(counts > 0, len(labels) / (present * np.maximum(counts, 1)), 0.0) ** power


def class_weights(labels: np.ndarray, n_classes: int, *, power: float) -> np.ndarray:
    """Per-example weights [shape=(len(labels),)]: the :func:`genre_weights` of each one's genre."""
    return genre_weights(labels, n_classes, power=power)[labels]


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


#: (training examples, test examples, L2) -> the test examples' logits [shape=(len(test), ..., genres)]
FitPredict = Callable[[np.ndarray, np.ndarray, float], np.ndarray]


def choose_l2(labels: np.ndarray, groups: Sequence[str], *, l2_grid: Sequence[float], folds: int, seed: int,
              fit_predict: FitPredict, scored: np.ndarray | None = None
              ) -> tuple[float, float, np.ndarray, dict[str, float]]:
    """L2 and temperature of a head by an inner cross-validation grouped by ``groups``.

    Every L2 of the grid is fitted on each inner fold's training part and scored on its
    test part (``fit_predict``); the L2 with the fewest out-of-fold errors wins (ties,
    within a few examples' worth of noise, go to the larger penalty), and the
    temperature is fitted on its out-of-fold logits. An example's logits may have
    several rows (the window counts of an audio clip), each scored against its label.
    ``scored`` [shape=(len(labels),)] bool: only these examples' errors choose the L2 and
    fit the temperature (all take part in the fits; None: all scored).
    Returns (L2, temperature, its out-of-fold logits [shape=(len(labels), ..., genres)],
    error rate of each L2 keyed ``f"{l2:g}"``).
    """
    labels = np.asarray(labels, dtype=np.int64)
    scored = np.ones(len(labels), dtype=bool) if scored is None else np.asarray(scored, dtype=bool)
    if not scored.any():
        raise ValueError("choose_l2 needs at least one scored example")
    parts = _inner_folds(labels, np.asarray(groups), folds=folds, seed=seed)
    everything = np.arange(len(labels))
    oof: dict[float, np.ndarray] = {}
    errors: dict[str, float] = {}
    for l2 in l2_grid:
        out: np.ndarray | None = None
        for test in parts:
            logits = fit_predict(np.setdiff1d(everything, test), test, l2)
            if out is None:
                out = np.zeros((len(labels), *logits.shape[1:]))
            out[test] = logits
        oof[l2] = out
        flat = out[scored].reshape(-1, out.shape[-1])
        errors[f"{l2:g}"] = float((flat.argmax(1) != np.repeat(labels[scored], len(flat) // len(labels[scored]))).mean())
    best = min(sorted(l2_grid, reverse=True), key=lambda c: round(errors[f"{c:g}"], 3))
    flat = oof[best][scored].reshape(-1, oof[best].shape[-1])
    flat_labels = np.repeat(labels[scored], len(flat) // len(labels[scored]))
    temperature = fit_temperature(flat, np.arange(len(flat)), flat_labels)
    return best, temperature, oof[best], errors


def fit_window_head(features: np.ndarray, labels: np.ndarray, groups: Sequence[str], *, order: list[int],
                    counts: list[int], n_classes: int, l2_grid: Sequence[float] = (0.01, 0.03, 0.1, 0.3, 1.0),
                    power: float = 0.5, inner_folds: int = 4, seed: int = 0, max_iter: int = 300
                    ) -> tuple[WindowHead, dict[str, np.ndarray]]:
    """Fit the head on all clips, L2 and temperature by :func:`choose_l2` (accuracy on the
    rows of every window count; the clips' class-weighted log loss favoured penalties too
    small for accuracy on the real clips).

    features [shape=(clips, windows, dim)] (NaN rows: windows a clip is too short for),
    labels [shape=(clips,)] genre indices, groups: each clip's artist. Returns the head
    and the inner CV's out-of-fold logits of the chosen L2, ``{"logits": [shape=(clips,
    len(counts), genres)]}``, from which plans are chosen.
    """
    labels = np.asarray(labels, dtype=np.int64)
    rows = window_count_rows(features, order, counts)  # (clips, len(counts), dim)
    weights = class_weights(labels, n_classes, power=power)

    def fit_predict(train: np.ndarray, test: np.ndarray, l2: float) -> np.ndarray:
        w, b = _fit(rows[train], labels[train], weights[train], l2=l2, n_classes=n_classes, max_iter=max_iter)
        return rows[test] @ w.T + b

    best, temperature, oof, inner = choose_l2(labels, groups, l2_grid=l2_grid, folds=inner_folds, seed=seed,
                                              fit_predict=fit_predict)
    weight, bias = _fit(rows, labels, weights, l2=best, n_classes=n_classes, max_iter=max_iter)
    log.info("window head: l2 %g (inner out-of-fold error rate %s), temperature %.3f", best,
             {k: round(v, 4) for k, v in inner.items()}, temperature)
    return WindowHead(weight, bias, temperature, best, inner), {"logits": oof}


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


__all__ = ["WindowHead", "choose_l2", "choose_plans", "class_weights", "fit_window_head", "genre_weights", "listen",
           "plan_table"]
