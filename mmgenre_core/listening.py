"""Listening in rounds: how many windows of a track the model hears.

A model that listens in rounds (``AudioConfig.window_order`` and ``window_rounds``, see
:func:`mmgenre_core.audio.listening_order`) hears every track's first round of windows
(two), and hears the next round only while its calibrated top probability stays below
a threshold, up to ``max_windows``. Its head was fitted on means of the features over
the window counts the rounds end at, so a track's answer is the head over the mean of
the windows it heard.

The plans a user picks by name (``listen: fast | balanced | thorough``) are chosen by
artist-grouped cross-validation (``benchmarks/cv_windows.py``) and carried by the
checkpoint (``metadata["listening"]``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .errors import ConfigError

PLAN_NAMES = ("fast", "balanced", "thorough")
DEFAULT_PLAN = "balanced"


@dataclass(frozen=True)
class ListeningPlan:
    """Hear up to ``max_windows`` windows a track; the next round only while the
    calibrated top probability is below ``threshold`` (0: never, 1: always)."""

    max_windows: int
    threshold: float

    def __post_init__(self) -> None:
        if not (isinstance(self.max_windows, int) and self.max_windows >= 1):
            raise ConfigError(f"max_windows must be a whole number of at least 1, not {self.max_windows!r}")
        if not (isinstance(self.threshold, (int, float)) and math.isfinite(self.threshold)
                and 0.0 <= self.threshold <= 1.0):
            raise ConfigError(f"a listening threshold must be between 0 and 1, not {self.threshold!r}")

    def unsure(self, top: np.ndarray | float) -> np.ndarray | bool:
        """Whether a track whose calibrated top probability is ``top`` hears another round
        (threshold 1 means always, also for a probability that rounds to 1)."""
        return np.logical_or(np.asarray(top) < self.threshold, self.threshold >= 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {"max_windows": self.max_windows, "threshold": float(self.threshold)}


def plans_of(metadata: Mapping[str, Any], *, num_windows: int) -> dict[str, ListeningPlan]:
    """The named plans of a checkpoint: its ``metadata["listening"]["plans"]``, or for
    a model without them (one that hears all its windows at once) one plan of all; a
    damaged entry (not a mapping, a bad number) counts as missing."""
    every = ListeningPlan(max_windows=num_windows, threshold=1.0)
    listening = metadata.get("listening") if isinstance(metadata, Mapping) else None
    stored = listening.get("plans") if isinstance(listening, Mapping) else None
    if not isinstance(stored, Mapping):
        return {name: every for name in PLAN_NAMES}
    plans = {}
    for name in PLAN_NAMES:
        raw = stored.get(name)
        try:
            plan = ListeningPlan(max_windows=int(raw["max_windows"]), threshold=float(raw["threshold"]))
        except (TypeError, KeyError, ValueError, ConfigError):
            plan = every
        plans[name] = ListeningPlan(max_windows=min(plan.max_windows, num_windows), threshold=plan.threshold)
    return plans


def rounds_up_to(round_ends: list[int], max_windows: int) -> list[int]:
    """The cumulative window counts a plan stops at: the round ends below ``max_windows``,
    then ``max_windows`` itself (e.g. [2, 5, 11] and 5 -> [2, 5]; and 4 -> [2, 4])."""
    ends = [e for e in round_ends if e < max_windows]
    return ends + [min(max_windows, round_ends[-1])]


def heard_rows(features: np.ndarray, order: list[int], count: int) -> np.ndarray:
    """The first ``count`` windows in listening order that are present.

    features [shape=(windows, dim)], NaN rows for windows not heard -> [shape=(heard, dim)].
    A track too short for the layout has a single window (features [shape=(1, dim)],
    or one finite row) and is that window whatever ``count`` asks for.
    """
    if features.shape[0] == 1:
        return features
    rows = features[order[:count]]
    rows = rows[np.isfinite(rows).all(axis=1)]
    if len(rows) == 0:
        rows = features[np.isfinite(features).all(axis=1)]
        if len(rows) != 1:
            raise ValueError(f"no heard window among the first {count}")
    return rows


def heard_mean(features: np.ndarray, order: list[int], count: int) -> np.ndarray:
    """The mean of :func:`heard_rows`: [shape=(dim,)]."""
    return heard_rows(features, order, count).mean(axis=0)


def window_count_rows(features: np.ndarray, order: list[int], counts: list[int]) -> np.ndarray:
    """Training rows of a head that listens in rounds: for each clip, its mean over the first n
    windows for each n of ``counts``. features [shape=(clips, windows, dim)] ->
    [shape=(clips, len(counts), dim)]."""
    return np.stack([np.stack([heard_mean(f, order, n) for n in counts]) for f in features])


__all__ = ["DEFAULT_PLAN", "PLAN_NAMES", "ListeningPlan", "heard_mean", "heard_rows", "plans_of", "rounds_up_to",
           "window_count_rows"]
