"""Raw-text n-grams of a lyrics text, for the bag of words that reads the text itself.

The HAN reads a grid of vocabulary ids (50 lines x 20 words, 20,000 words): words
outside the vocabulary, the lines past the grid and the punctuation inside a word
(``lovin'``, ``don't``, ``c'est``) never reach it. sklearn's TF-IDF over the raw text
sees all of them, and its character n-grams were the one representation that beat
word TF-IDF on lyrics_large (docs/quality.md). This module gives the bag the same
two analysers over the cleaned lyrics (:func:`mmgenre_core.text.clean_lyrics`, so
Genius headers and section labels are not read):

* words: sklearn's default token pattern ``(?u)\\b\\w\\w+\\b`` on the lower-cased text,
  and each pair of neighbouring tokens (``ngram_range=(1, 2)``);
* characters: sklearn's ``char_wb`` 2- to 5-grams, each whitespace-separated token
  padded with one space on both sides.

An n-gram is named by a stable 64-bit key, its block (1 words, 2 characters) times
2**32 plus the CRC-32 of its UTF-8 bytes, so a checkpoint stores integers, not
strings, and every word key sorts before every character key. Two n-grams of one block
share a key with probability 2**-32 per pair (a few hundred pairs among the millions
of n-grams of a corpus, as sklearn's ``HashingVectorizer`` accepts far more).

Only the standard library and numpy are imported.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from functools import lru_cache
from typing import Iterable

import numpy as np

from .text import clean_lyrics

WORD_BLOCK, CHAR_BLOCK = 1, 2
#: Every key of block b lies in [b * 2**32, (b + 1) * 2**32).
BLOCK_SPAN = 1 << 32
CHAR_SIZES = (2, 3, 4, 5)

_TOKEN = re.compile(r"(?u)\b\w\w+\b")


def bag_text(text: str | None) -> str:
    """The text the bag reads: the cleaned lines, lower-cased, one per line ('' for none)."""
    return "\n".join(clean_lyrics(text)).lower()


def word_ngrams(text: str) -> list[str]:
    """The word 1- and 2-grams of an already lower-cased ``text``, as sklearn's
    ``TfidfVectorizer(ngram_range=(1, 2))`` lists them."""
    tokens = _TOKEN.findall(text)
    return tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]


def char_ngrams(text: str) -> list[str]:
    """The character 2- to 5-grams of an already lower-cased ``text``, as sklearn's
    ``analyzer="char_wb"`` lists them (a word shorter than n gives its padded self once)."""
    out: list[str] = []
    for word in text.split():  # split() already treats any run of whitespace as one break
        out.extend(word_char_ngrams(word))
    return out


def word_char_ngrams(word: str) -> list[str]:
    """The ``char_wb`` 2- to 5-grams of one whitespace-separated token, padded with a space on
    both sides (a padded token no longer than n counts once as a whole, for all n from there up).
    The vocabulary bag (training/build.py) and the text bag both count these."""
    padded = f" {word} "
    size = len(padded)
    out: list[str] = []
    for n in CHAR_SIZES:
        if size <= n:
            out.append(padded)
            break
        out.extend(padded[i:i + n] for i in range(size - n + 1))
    return out


@lru_cache(maxsize=1 << 16)
def _token_char_keys(word: str) -> tuple[np.ndarray, np.ndarray]:
    """(keys, counts) of one token's character n-grams, cached: a song repeats its words, and
    songs share most of theirs (a song's n-grams in about a fifth of the time)."""
    keys, counts = _keys(word_char_ngrams(word), CHAR_BLOCK)
    keys.flags.writeable = counts.flags.writeable = False
    return keys, counts


def _keys(grams: Iterable[str], block: int) -> tuple[np.ndarray, np.ndarray]:
    counts = Counter(grams)
    if not counts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    # surrogatepass: a lone surrogate (tags decoded with surrogateescape) still has bytes.
    keys = np.fromiter((zlib.crc32(g.encode("utf-8", "surrogatepass")) for g in counts), dtype=np.int64,
                       count=len(counts))
    return keys + block * BLOCK_SPAN, np.fromiter(counts.values(), dtype=np.int64, count=len(counts))


def ngram_counts(text: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The n-grams of one lyrics text: distinct keys [shape=(n,)] int64, ascending (word keys
    first), and how often each occurs [shape=(n,)] int64. No words: two empty arrays."""
    lowered = bag_text(text)
    word_keys, word_counts = _keys(word_ngrams(lowered), WORD_BLOCK)
    # Character n-grams never cross a token: each distinct token's, times its count (the same
    # counts as char_ngrams(lowered)).
    tokens = Counter(lowered.split())
    per_token = [(_token_char_keys(t), n) for t, n in tokens.items()]
    keys = np.concatenate([word_keys, *(k for (k, _), _ in per_token)])
    counts = np.concatenate([word_counts, *(c * n for (_, c), n in per_token)])
    # Sort, and merge the (rare) n-grams of one text that share a key.
    keys, inverse = np.unique(keys, return_inverse=True)
    return keys, np.bincount(inverse, weights=counts, minlength=len(keys)).astype(np.int64)


__all__ = ["BLOCK_SPAN", "CHAR_BLOCK", "WORD_BLOCK", "bag_text", "char_ngrams", "ngram_counts", "word_char_ngrams",
           "word_ngrams"]
