"""The Free Music Archive (FMA) dataset, read in its real formats.

* ``tracks.csv`` has a two-row column header (top level: ``album``, ``artist``,
  ``set``, ``track``; second row: the field) and the index ``track_id`` on a third
  header row. It is read as FMA's own ``utils.load()`` reads it:
  ``pandas.read_csv(path, index_col=0, header=[0, 1])``, the list columns parsed with
  ``ast.literal_eval`` and ``('set', 'subset')`` an ordered category
  small < medium < large.
* ``genres.csv``: genre_id, #tracks, parent, title, top_level; the 16 top-level
  genres are those with ``parent == 0``.
* Audio: ``AUDIO_DIR/NNN/NNNNNN.mp3`` (the six-digit zero-padded track id, its first
  three digits as the folder).
* ``checksums`` (in each audio archive): ``sha1  NNN/NNNNNN.mp3`` lines.

The medium subset is every track whose subset is small or medium (25,000 tracks,
labels from ``('track', 'genre_top')``, the official artist-filtered 80/10/10 split
in ``('set', 'split')``).
"""

from __future__ import annotations

import ast
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SUBSETS = ("small", "medium", "large")
LIST_COLUMNS = [("track", "tags"), ("album", "tags"), ("artist", "tags"),
                ("track", "genres"), ("track", "genres_all")]
SPLITS = {"training": "train", "validation": "valid", "test": "test"}

#: Clips of the FMA archives that decode to no audio or to much less than 30 s: the
#: track's duration in the FMA API was wrong, so the 30-s cut fell (partly) outside
#: the song. Listed by the dataset's author in https://github.com/mdeff/fma/issues/8
#: and /issues/41 (099134, 108925 and 133297 hold no audio at all; they are in the
#: small and therefore the medium subset). Skipped before decoding, with a log line.
KNOWN_BAD_CLIPS: dict[int, str] = {
    **{tid: "known FMA clip with no or truncated audio (mdeff/fma#8)" for tid in (
        1486, 5574, 65753, 80391, 98558, 98559, 98560, 98565, 98566, 98567, 98568, 98569,
        98571, 105247, 108924, 126981, 127336, 143992)},
    **{tid: "known FMA clip without audio (mdeff/fma#8, #41)" for tid in (99134, 108925, 133297)},
}


def audio_path(audio_dir: str | os.PathLike, track_id: int) -> Path:
    """``AUDIO_DIR/NNN/NNNNNN.mp3`` of a track id."""
    tid = f"{int(track_id):06d}"
    return Path(audio_dir) / tid[:3] / f"{tid}.mp3"


def load_tracks(path: str | os.PathLike) -> "pd.DataFrame":  # noqa: F821
    """``tracks.csv`` as FMA's ``utils.load()`` returns it (list columns parsed, subset ordered)."""
    import pandas as pd

    tracks = pd.read_csv(path, index_col=0, header=[0, 1], low_memory=False)
    for column in LIST_COLUMNS:
        if column in tracks.columns:
            tracks[column] = tracks[column].map(_literal_list)
    if ("set", "subset") in tracks.columns:
        tracks[("set", "subset")] = tracks[("set", "subset")].astype(
            pd.CategoricalDtype(categories=SUBSETS, ordered=True))
    for column in (("track", "genre_top"), ("track", "license"), ("album", "type")):
        if column in tracks.columns:
            tracks[column] = tracks[column].astype("category")
    return tracks


def _literal_list(value: Any) -> list:
    if isinstance(value, str):
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return []
        return list(parsed) if isinstance(parsed, (list, tuple)) else [parsed]
    return []


def load_genres(path: str | os.PathLike) -> "pd.DataFrame":  # noqa: F821
    """``genres.csv`` indexed by genre_id."""
    import pandas as pd

    return pd.read_csv(path, index_col=0)


def top_level_genres(genres: "pd.DataFrame") -> list[str]:  # noqa: F821
    """Titles of the top-level genres (``parent == 0``), sorted: FMA's 16 classes."""
    return sorted(str(t) for t in genres.loc[genres["parent"] == 0, "title"])


def read_checksums(path: str | os.PathLike) -> dict[str, str]:
    """A ``sha1sum``-style file (``sha1  relative/path``) -> {normalised relative path: sha1}."""
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            digest, _, name = line.partition(" ")
            name = name.strip().lstrip("*")  # "*name" marks binary mode in sha1sum output
            if len(digest) == 40 and name:
                out[os.path.normpath(name)] = digest.lower()
    return out


@dataclass
class FMASource:
    metadata_dir: str
    audio_dir: str | None = None
    subset: str = "medium"
    tracks: str | None = None  # default: metadata_dir/tracks.csv
    genres: str | None = None  # default: metadata_dir/genres.csv
    verify_checksums: bool = False
    checksums: str | None = None  # default: audio_dir/checksums
    skip_known_bad: bool = True
    name: str = "fma"
    genre_map: dict[str, str] = field(default_factory=dict)
    type: str = "fma"


def select_subset(tracks: "pd.DataFrame", subset: str) -> "pd.DataFrame":  # noqa: F821
    """Tracks of ``subset`` or a smaller one (medium = small + medium) that have a top genre."""
    if subset not in SUBSETS:
        raise ValueError(f"FMA subset must be one of {', '.join(SUBSETS)}, not {subset!r}")
    chosen = tracks[tracks[("set", "subset")] <= subset]
    return chosen[chosen[("track", "genre_top")].notna()]


__all__ = [
    "SUBSETS",
    "SPLITS",
    "KNOWN_BAD_CLIPS",
    "FMASource",
    "audio_path",
    "load_tracks",
    "load_genres",
    "top_level_genres",
    "read_checksums",
    "select_subset",
]
