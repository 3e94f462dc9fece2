"""The shape of a lyrics text: how long it is, how its lines repeat, which script it uses.

A TF-IDF bag forgets all of this: each block is L2-normalised, so a 90-line rap verse
and an 8-line folk song weigh the same, and a chorus sung four times counts as
``1 + log 4`` of itself. A few numbers per song give that back to the lyrics head. In
``benchmarks/cv_lyrics_linear.py``-style runs on lyrics_large (5 artist-grouped folds) the
six below, standardised, added 0.2 to 0.9 points to a LinearSVC over the word and character
n-grams on every fold (docs/quality.md).

They are computed on the text the bag reads (:func:`mmgenre_core.ngrams.bag_text`: the
cleaned lines, lower-cased), so Genius headers and section labels do not count.
Only the standard library and numpy are imported.
"""

from __future__ import annotations

import math
import re

import numpy as np

from .ngrams import bag_text

#: What each column of :func:`text_shape` measures, in order.
SHAPE_NAMES = (
    "log(1 + words)",
    "log(1 + lines)",
    "distinct words / words",
    "log(1 + words per line)",
    "non-ASCII share of the characters",
    "share of lines that repeat an earlier line",
)

_WORD = re.compile(r"(?u)\b\w+\b")


def text_shape(text: str | None) -> np.ndarray:
    """The :data:`SHAPE_NAMES` numbers of one lyrics text [shape=(6,)] float32; all zeros
    for a text without words (None, empty, labels only)."""
    lowered = bag_text(text)
    words = _WORD.findall(lowered)
    if not words:
        return np.zeros(len(SHAPE_NAMES), dtype=np.float32)
    lines = lowered.split("\n")  # bag_text keeps only non-empty lines
    return np.array([
        math.log1p(len(words)),
        math.log1p(len(lines)),
        len(set(words)) / len(words),
        math.log1p(len(words) / len(lines)),
        sum(ord(ch) > 127 for ch in lowered) / len(lowered),
        1.0 - len(set(lines)) / len(lines),
    ], dtype=np.float32)


__all__ = ["SHAPE_NAMES", "text_shape"]
