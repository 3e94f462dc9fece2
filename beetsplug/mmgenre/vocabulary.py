"""Genre names in lastgenre's vocabulary, read from the beets package installed.

mmgenre's models answer in FMA's top-level names ("Hip-Hop", "Soul-RnB", "Old-Time /
Historic"); beets' lastgenre plugin writes names from its own whitelist (``genres.txt``)
and canonical tree (``genres-tree.yaml``), title-cased ("Hip Hop", "R&B"). With
``vocabulary: lastgenre`` mmgenre writes lastgenre's names, so the two plugins can run
on one library (lastgenre online, mmgenre offline or for what Last.fm does not know)
and agree on names; ``whitelist: yes`` means lastgenre's list, as it does there.

The files are found with :func:`importlib.util.find_spec` and never imported
(importing lastgenre needs pylast) nor copied: every name below is checked against
the installed ``genres.txt`` when it is used, and one the installed list lacks is
dropped with a warning instead of written.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from functools import lru_cache

#: FMA top-level genre -> lastgenre's name for it (a top node of its tree where that node
#: is whitelisted; the whitelisted name of the node otherwise). None: lastgenre has no
#: genre for it (FMA's "Instrumental" and "Spoken" are forms, not genres, there).
FMA_TO_LASTGENRE: dict[str, str | None] = {
    "Blues": "blues",
    "Classical": "classical",
    "Country": "country",
    "Easy Listening": "easy listening",
    "Electronic": "electronic",
    "Experimental": "experimental music",  # the tree's "avant-garde" branch
    "Folk": "folk music",  # the tree's "folk" node; "folk" itself is not whitelisted
    "Hip-Hop": "hip hop",
    "Instrumental": None,
    "International": "world music",
    "Jazz": "jazz",
    "Old-Time / Historic": "old-time",
    "Pop": "pop",
    "Rock": "rock",
    "Soul-RnB": "r&b",
    "Spoken": None,
}

VOCABULARIES = ("fma", "lastgenre")


class VocabularyError(ValueError):
    """lastgenre's files cannot be found or read in the installed beets."""


def lastgenre_file(name: str) -> str:
    """The path of one of lastgenre's data files (``genres.txt``, ``genres-tree.yaml``)."""
    try:
        spec = importlib.util.find_spec("beetsplug.lastgenre")
    except (ImportError, ValueError):
        spec = None
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    raise VocabularyError(f"lastgenre's {name} is not in the installed beets (beets >= 2.7 ships it)")


@lru_cache(maxsize=1)
def lastgenre_whitelist() -> frozenset[str]:
    """lastgenre's whitelist (lower case), from the installed beets."""
    path = lastgenre_file("genres.txt")
    try:
        with open(path, encoding="utf-8") as fh:
            return frozenset(line.strip().lower() for line in fh if line.strip() and not line.startswith("#"))
    except (OSError, UnicodeDecodeError) as exc:
        raise VocabularyError(f"cannot read {path}: {exc}") from exc


def lastgenre_genre_map(*, title_case: bool = True) -> dict[str, str | None]:
    """A ``genre_map`` from FMA's names to lastgenre's (title-cased as lastgenre writes
    them with ``title_case: yes``); a name the installed whitelist lacks maps to None."""
    whitelist = lastgenre_whitelist()
    out: dict[str, str | None] = {}
    for fma, name in FMA_TO_LASTGENRE.items():
        if name is None or name not in whitelist:
            out[fma] = None
        else:
            out[fma] = name.title() if title_case else name
    return out


def apply_vocabulary(genre_map: Mapping[str, str | None], vocabulary: str, *,
                     title_case: bool = True) -> dict[str, str | None]:
    """The user's ``genre_map`` on top of the vocabulary's own map (the user's entries win)."""
    if vocabulary == "fma":
        return dict(genre_map)
    base = lastgenre_genre_map(title_case=title_case)
    lowered = {k.casefold(): k for k in base}
    for source, target in genre_map.items():
        base.pop(lowered.get(source.casefold(), source), None)
        base[source] = target
    return base


__all__ = ["FMA_TO_LASTGENRE", "VOCABULARIES", "VocabularyError", "apply_vocabulary", "lastgenre_file",
           "lastgenre_genre_map", "lastgenre_whitelist"]
