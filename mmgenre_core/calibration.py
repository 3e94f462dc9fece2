"""Confidence calibration: temperature scaling (Guo et al., "On Calibration of Modern
Neural Networks", ICML 2017) and the expected calibration error.

A checkpoint may carry ``metadata["calibration"]["temperature"]``: one temperature per
kind of input, ``{"audio": Ta, "lyrics": Tl, "both": Tb}``. Inference divides each
window's logits by the temperature of what that track offered (audio only, lyrics
only, or both) before the softmax, then averages the window probabilities as before.
A checkpoint without it is uncalibrated (every temperature 1: the same numbers as
before calibration existed).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from .errors import CheckpointError

KINDS = ("audio", "lyrics", "both")

#: Temperatures outside this range mean a broken fit or a hand-edited checkpoint.
_T_RANGE = (0.01, 100.0)


def read_temperatures(checkpoint: Any) -> dict[str, float]:
    """The checkpoint's temperatures by kind of input; 1.0 where it has none.

    Raises CheckpointError when a temperature is present but not a positive, finite
    number in a sane range.
    """
    where = getattr(checkpoint, "path", None) or "checkpoint"
    calibration = (checkpoint.metadata or {}).get("calibration")
    if calibration is None:
        return dict.fromkeys(KINDS, 1.0)
    if not isinstance(calibration, dict) or not isinstance(calibration.get("temperature"), dict):
        raise CheckpointError(f"{where}: metadata.calibration must hold a 'temperature' mapping")
    out = {}
    for kind in KINDS:
        value = calibration["temperature"].get(kind, 1.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not _T_RANGE[0] <= value <= _T_RANGE[1]:
            raise CheckpointError(f"{where}: calibration temperature for {kind!r} must be a number in "
                                  f"[{_T_RANGE[0]}, {_T_RANGE[1]}], not {value!r}")
        out[kind] = float(value)
    return out


#: A fusion scale outside this range means a broken fit or a hand-edited checkpoint.
_SCALE_RANGE = (0.0, 100.0)


def read_fusion(checkpoint: Any, *, n_genres: int) -> tuple[float, list[float] | None]:
    """A with-audio track's fusion rule (training/fusion.py): the factor on its lyrics
    vector and the logits added to it, ``metadata["fusion"]["lyrics_scale"]`` and
    ``["lyrics_offset"]`` [n_genres]; (1.0, None) without a rule (the two heads' evidence
    added as is; checkpoints before 0.5.3).

    Raises CheckpointError when it is present but not finite numbers in a sane range.
    """
    where = getattr(checkpoint, "path", None) or "checkpoint"
    fusion = (checkpoint.metadata or {}).get("fusion")
    if fusion is None:
        return 1.0, None
    value = fusion.get("lyrics_scale") if isinstance(fusion, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not _SCALE_RANGE[0] <= value <= _SCALE_RANGE[1]:
        raise CheckpointError(f"{where}: metadata.fusion.lyrics_scale must be a number in "
                              f"[{_SCALE_RANGE[0]}, {_SCALE_RANGE[1]}], not {value!r}")
    offset = fusion.get("lyrics_offset")
    if offset is not None and not (isinstance(offset, list) and len(offset) == n_genres and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and abs(v) <= 1000
            for v in offset)):
        raise CheckpointError(f"{where}: metadata.fusion.lyrics_offset must be {n_genres} finite numbers")
    return float(value), (None if offset is None else [float(v) for v in offset])


def softmax(z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, shifted by the row maximum (no overflow)."""
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def track_probabilities(logits: np.ndarray, track_of_row: np.ndarray, n_tracks: int, *,
                        temperature: float = 1.0) -> np.ndarray:
    """Mean over each track's rows of softmax(logits / T), as inference computes it.

    logits [shape=(rows, n_genres)], track_of_row [shape=(rows,)] -> [shape=(n_tracks, n_genres)].
    """
    probs = softmax(np.asarray(logits, np.float64) / temperature)
    out = np.zeros((n_tracks, probs.shape[1]))
    np.add.at(out, np.asarray(track_of_row), probs)
    return out / np.maximum(np.bincount(track_of_row, minlength=n_tracks), 1)[:, None]


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean -log p(true genre); probs [shape=(n, n_genres)], labels [shape=(n,)] ints."""
    p = probs[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(p, 1e-12, None)).mean())


def fit_temperature(logits: np.ndarray, track_of_row: np.ndarray, labels: np.ndarray, *,
                    bounds: tuple[float, float] = (0.05, 20.0), iterations: int = 60) -> float:
    """The temperature that minimises the tracks' negative log-likelihood.

    Golden-section search over log T (the likelihood of a temperature-scaled mean of
    softmaxes is smooth and, in practice, unimodal in log T); deterministic.
    """
    labels = np.asarray(labels)
    if len(labels) == 0:
        return 1.0

    def loss(log_t: float) -> float:
        probs = track_probabilities(logits, track_of_row, len(labels), temperature=math.exp(log_t))
        return negative_log_likelihood(probs, labels)

    best = golden_section_minimum(loss, math.log(bounds[0]), math.log(bounds[1]), iterations=iterations)
    return float(round(math.exp(best), 4))


def golden_section_minimum(loss: Callable[[float], float], lo: float, hi: float, *, iterations: int = 60) -> float:
    """The x in [lo, hi] where a unimodal ``loss`` is smallest (the middle of the last
    bracket), by golden-section search; deterministic."""
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(iterations):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = loss(b)
    return (lo + hi) / 2


def reliability_bins(probs: np.ndarray, labels: np.ndarray, *, bins: int = 10) -> list[dict[str, float]]:
    """Top-genre confidence against accuracy in equal-width confidence bins.

    Returns one dict per non-empty bin: lower, upper, count, confidence (mean), accuracy.
    """
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    out = []
    for i in range(bins):
        inside = (confidence > edges[i]) & (confidence <= edges[i + 1]) if i else confidence <= edges[1]
        if inside.any():
            out.append({"lower": float(edges[i]), "upper": float(edges[i + 1]), "count": int(inside.sum()),
                        "confidence": float(confidence[inside].mean()), "accuracy": float(correct[inside].mean())})
    return out


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, *, bins: int = 10) -> float:
    """ECE: the count-weighted mean |accuracy - confidence| over :func:`reliability_bins`."""
    n = len(labels)
    if n == 0:
        return float("nan")
    return float(sum(b["count"] * abs(b["accuracy"] - b["confidence"])
                     for b in reliability_bins(probs, labels, bins=bins)) / n)
