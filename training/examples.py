"""One labelled example, and the names it is labelled with.

:class:`Example` (audio, lyrics or both, with a genre, a split and an artist) and
:class:`Skipped` are what every data source yields; :func:`canonical_genre` and
:func:`normalise_split` put labels and split names into one spelling. Shared by
:mod:`training.datasets` (audio sources) and :mod:`training.lyrics_data` (lyrics).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mmgenre_core.errors import ConfigError

SPLIT_NAMES = ("train", "valid", "test")
_SPLIT_ALIASES = {
    "train": "train", "training": "train", "trn": "train",
    "valid": "valid", "validation": "valid", "val": "valid", "dev": "valid",
    "test": "test", "testing": "test", "tst": "test",
}

#: FMA's 16 top-level genres: folder and label names are mapped onto these spellings
#: when they match ignoring case and punctuation ("hiphop", "hip_hop" -> "Hip-Hop").
FMA_GENRES = (
    "Blues", "Classical", "Country", "Easy Listening", "Electronic", "Experimental", "Folk",
    "Hip-Hop", "Instrumental", "International", "Jazz", "Old-Time / Historic", "Pop", "Rock",
    "Soul-RnB", "Spoken",
)


def _fold(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "", name.casefold())


_CANONICAL = {_fold(g): g for g in FMA_GENRES}
_CANONICAL.update({"hiphop": "Hip-Hop", "rnb": "Soul-RnB", "soulrnb": "Soul-RnB",
                   "oldtimehistoric": "Old-Time / Historic"})


def canonical_genre(name: str, genre_map: dict[str, str] | None = None) -> str:
    """A label as given, mapped through ``genre_map`` (exact or case-folded), then onto
    FMA's spelling of the same genre when there is one."""
    name = str(name).strip()
    if genre_map:
        if name in genre_map:
            return genre_map[name]
        folded = {_fold(k): v for k, v in genre_map.items()}
        if _fold(name) in folded:
            return folded[_fold(name)]
    return _CANONICAL.get(_fold(name), name)


def normalise_split(value: Any) -> str | None:
    """``training``/``validation``/``test`` (and aliases) -> train/valid/test; blank -> None."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if not text or text == "nan":
        return None
    if text not in _SPLIT_ALIASES:
        raise ConfigError(f"unknown split name {value!r} (use train/valid/test or training/validation/test)")
    return _SPLIT_ALIASES[text]


@dataclass
class Example:
    """One labelled example: audio (``path``), lyrics, or both."""

    key: str
    genre: str
    split: str | None = None
    artist: str | None = None
    title: str | None = None
    path: str | None = None
    lyrics: str | None = None
    source: str = ""
    track_id: int | None = None
    sha1: str | None = None  # expected sha1 of the audio file, when checksums are known
    # Lyrics of another kind than what inference reads (an excerpt, another corpus): the
    # lyrics head learns an offset per domain in training and reads none (lyrics_data.py).
    domain: str | None = None

    @property
    def has_audio(self) -> bool:
        return self.path is not None

    @property
    def has_lyrics(self) -> bool:
        return bool(self.lyrics)


@dataclass
class Skipped:
    key: str
    path: str | None
    reason: str

