"""How a track with both audio and lyrics weighs the two, learnt on genre-matched pairs.

No training track has both inputs, so the rule is fitted on pairs that approximate
such tracks: every audio clip with the lyrics of songs of its own genre (other artists,
other recordings). Both halves are out-of-fold answers of the inner artist-grouped
cross-validation, so neither head has seen the example it answers.

The rule is naive-Bayes late fusion with a learnt lyrics weight ``w``::

    logits = audio_logits / T_audio + w * (lyrics_logits / T_lyrics - log lyrics_prior)

where ``lyrics_prior`` is the genre frequencies of the lyrics corpus: naive Bayes
divides the product by the prior, and the lyrics' prior (a third Rock) is the one to
take out. ``w`` minimises the pairs' negative log-likelihood.
``benchmarks/cv_fusion.py`` measures this rule against each branch alone and against
late fusion with ``w`` chosen on a grid, and a free two-weight head (not better on
held-out pairs).

Inference applies it to a with-audio track by scaling its lyrics vector by
``w * T_audio / T_lyrics``, adding ``T_audio * w * (b_lyrics / T_lyrics - log prior)``
and dividing by ``T_audio`` (``metadata["fusion"]``).
"""

from __future__ import annotations

import numpy as np

from mmgenre_core.calibration import golden_section_minimum

#: Bounds of the lyrics weight: 0 ignores the lyrics, 4 lets them outvote the audio.
WEIGHT_BOUNDS = (0.0, 4.0)
#: Songs drawn for each clip: more pairs, less dependence on one draw.
SONGS_PER_CLIP = 5


def genre_matched_pairs(audio_labels: np.ndarray, lyrics_labels: np.ndarray, *, per_clip: int = SONGS_PER_CLIP,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each clip with ``per_clip`` songs of its genre drawn with a seeded generator
    (clips of a genre without songs, e.g. Classical, have no pair).

    audio_labels [shape=(clips,)], lyrics_labels [shape=(songs,)] -> clip and song
    indices [shape=(pairs,)] each.
    """
    rng = np.random.default_rng(seed)
    by_genre = {int(g): np.flatnonzero(lyrics_labels == g) for g in np.unique(lyrics_labels)}
    clips, songs = [], []
    for i, g in enumerate(np.asarray(audio_labels)):
        pool = by_genre.get(int(g))
        if pool is None or not len(pool):
            continue
        drawn = rng.choice(pool, size=per_clip, replace=len(pool) < per_clip)
        clips.extend([i] * per_clip)
        songs.extend(drawn.tolist())
    return np.asarray(clips, dtype=np.int64), np.asarray(songs, dtype=np.int64)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def fused_logits(audio: np.ndarray, lyrics: np.ndarray, weight: float) -> np.ndarray:
    """The rule: calibrated audio logits plus ``weight`` x the lyrics evidence (calibrated
    logits minus the log prior), both [shape=(pairs, genres)]."""
    return np.asarray(audio, np.float64) + weight * np.asarray(lyrics, np.float64)


def fit_lyrics_weight(audio: np.ndarray, lyrics: np.ndarray, labels: np.ndarray, *,
                      bounds: tuple[float, float] = WEIGHT_BOUNDS, iterations: int = 60) -> float:
    """The lyrics weight that minimises the pairs' negative log-likelihood.

    audio, lyrics [shape=(pairs, genres)] (calibrated logits; lyrics evidence),
    labels [shape=(pairs,)]. Golden-section search: the loss is convex in the weight
    (a log-sum-exp of functions linear in it), so this finds its minimum; deterministic.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if not len(labels):
        raise ValueError("no pairs to fit the fusion weight on")
    rows = np.arange(len(labels))

    def loss(w: float) -> float:
        return float(-_log_softmax(fused_logits(audio, lyrics, w))[rows, labels].mean())

    best = golden_section_minimum(loss, bounds[0], bounds[1], iterations=iterations)
    # The ends are candidates too: a convex loss may be smallest at a bound.
    return float(min((bounds[0], best, bounds[1]), key=loss))


__all__ = ["WEIGHT_BOUNDS", "SONGS_PER_CLIP", "genre_matched_pairs", "fused_logits", "fit_lyrics_weight"]
