"""A small FMA in FMA's real formats, around the 12 real FMA clips of ``shared/data/fma_sample``.

``tracks.csv`` copies the real file's layout: 52 columns under a two-row header (top
level album / artist / set / track, then the field), the index name ``track_id`` on
a third header row, list columns written as Python literals ("[21]", "['awol']"),
dates as "YYYY-MM-DD HH:MM:SS". It is written by pandas exactly as FMA's own
``tracks.csv`` was. The 12 real tracks keep their real ids, genres, titles, artists
and splits (from ``fma_sample/labels.csv``); extra rows exercise the loader:

* 3 rows of the ``large`` subset (one without a top genre): never in "medium";
* a ``validation`` track whose audio file does not exist;
* a track whose mp3 is broken (random bytes) and one that is digital silence;
* 099134, a clip the FMA authors list as holding no audio (mdeff/fma#41).

The audio folder is built in a temporary directory: symbolic links to the real
clips (never copies) in the ``AUDIO_DIR/NNN/NNNNNN.mp3`` layout, plus the broken and
silent files, and an FMA-style ``checksums`` file (``sha1  NNN/NNNNNN.mp3``).
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..conftest import encode_with_av

# The real tracks.csv column layout, in order (52 columns).
COLUMNS: list[tuple[str, str]] = (
    [("album", f) for f in ("comments", "date_created", "date_released", "engineer", "favorites", "id",
                            "information", "listens", "producer", "tags", "title", "tracks", "type")]
    + [("artist", f) for f in ("active_year_begin", "active_year_end", "associated_labels", "bio", "comments",
                               "date_created", "favorites", "id", "latitude", "location", "longitude", "members",
                               "name", "related_projects", "tags", "website", "wikipedia_page")]
    + [("set", "split"), ("set", "subset")]
    + [("track", f) for f in ("bit_rate", "comments", "composer", "date_created", "date_recorded", "duration",
                              "favorites", "genre_top", "genres", "genres_all", "information", "interest",
                              "language_code", "license", "listens", "lyricist", "number", "publisher", "tags",
                              "title")]
)

MISSING_ID = 20001  # validation split, no audio file
BROKEN_ID = 20002  # random bytes named .mp3
SILENT_ID = 20003  # 30 s of digital silence, a valid mp3
KNOWN_BAD_ID = 99134  # listed in training.fma.KNOWN_BAD_CLIPS
LARGE_IDS = (20010, 20011, 20012)


@dataclass
class FMAFixture:
    metadata_dir: Path
    audio_dir: Path
    tracks_csv: Path
    labels: list[dict[str, str]]  # the real labels.csv rows
    ids: dict[str, list[int]] = field(default_factory=dict)


def _top_genre_ids(genres_csv: Path) -> dict[str, int]:
    with open(genres_csv, newline="", encoding="utf-8") as fh:
        return {row["title"]: int(row["genre_id"]) for row in csv.DictReader(fh) if row["parent"] == "0"}


def _row(track_id: int, *, genre: str | None, genre_id: int | None, title: str, artist: str, split: str,
         subset: str, artist_id: int, album_id: int) -> dict[tuple[str, str], object]:
    genres = f"[{genre_id}]" if genre_id is not None else "[]"
    values: dict[tuple[str, str], object] = {c: "" for c in COLUMNS}
    values.update({
        ("album", "comments"): 0, ("album", "date_created"): "2008-11-26 01:44:45",
        ("album", "date_released"): "2009-01-05 00:00:00", ("album", "favorites"): 1, ("album", "id"): album_id,
        ("album", "listens"): 1000, ("album", "tags"): "[]", ("album", "title"): f"{artist} album",
        ("album", "tracks"): 7, ("album", "type"): "Album",
        ("artist", "comments"): 0, ("artist", "date_created"): "2008-11-26 01:42:32", ("artist", "favorites"): 3,
        ("artist", "id"): artist_id, ("artist", "name"): artist, ("artist", "tags"): "[]",
        ("set", "split"): split, ("set", "subset"): subset,
        ("track", "bit_rate"): 256000, ("track", "comments"): 0, ("track", "date_created"): "2008-11-26 01:48:12",
        ("track", "duration"): 168, ("track", "favorites"): 2, ("track", "genre_top"): genre or "",
        ("track", "genres"): genres, ("track", "genres_all"): genres, ("track", "interest"): 4656,
        ("track", "language_code"): "en",
        ("track", "license"): "Attribution-NonCommercial-ShareAlike 3.0 International",
        ("track", "listens"): 1293, ("track", "number"): 3, ("track", "tags"): "[]", ("track", "title"): title,
    })
    return values


def write_tracks_csv(path: Path, rows: dict[int, dict[tuple[str, str], object]]) -> Path:
    """Write rows {track_id: {(top, field): value}} in the real tracks.csv layout (via pandas)."""
    import pandas as pd

    columns = pd.MultiIndex.from_tuples(COLUMNS)
    frame = pd.DataFrame([[rows[t][c] for c in COLUMNS] for t in sorted(rows)], columns=columns,
                         index=pd.Index(sorted(rows), name="track_id"))
    frame.to_csv(path)
    return path


def _silent_mp3(path: Path, seconds: float = 30.0, rate: int = 44100) -> Path:
    pcm = np.zeros((int(seconds * rate), 2), dtype=np.float32)
    return encode_with_av(path, pcm, rate, codec="libmp3lame", container="mp3", bit_rate=128000)


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def build_fma_fixture(data_dir: Path, tmp: Path) -> FMAFixture:
    """tracks.csv + genres.csv in ``tmp/fma_metadata``, audio (links + bad files) in ``tmp/fma_audio``."""
    meta = tmp / "fma_metadata"
    audio = tmp / "fma_audio"
    meta.mkdir(parents=True, exist_ok=True)
    audio.mkdir(parents=True, exist_ok=True)
    genre_ids = _top_genre_ids(data_dir / "fma_metadata" / "genres.csv")
    os.symlink(data_dir / "fma_metadata" / "genres.csv", meta / "genres.csv")
    with open(data_dir / "fma_sample" / "labels.csv", newline="", encoding="utf-8") as fh:
        labels = list(csv.DictReader(fh))
    rows: dict[int, dict] = {}
    artists: dict[str, int] = {}
    for lab in labels:
        tid = int(lab["track_id"])
        aid = artists.setdefault(lab["artist"], len(artists) + 1)
        rows[tid] = _row(tid, genre=lab["genre_top"], genre_id=genre_ids[lab["genre_top"]], title=lab["title"],
                         artist=lab["artist"], split=lab["split"], subset="small", artist_id=aid, album_id=aid)
        dest = audio / f"{tid:06d}"[:3] / f"{tid:06d}.mp3"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(data_dir / "fma_sample" / "fma_small" / f"{tid:06d}"[:3] / f"{tid:06d}.mp3", dest)
    extra = [
        (MISSING_ID, "Rock", "validation", "medium"),
        (BROKEN_ID, "Rock", "training", "medium"),
        (SILENT_ID, "Pop", "training", "medium"),
        (KNOWN_BAD_ID, "Rock", "training", "small"),
        (LARGE_IDS[0], "Rock", "training", "large"),
        (LARGE_IDS[1], "Jazz", "test", "large"),
        (LARGE_IDS[2], None, "training", "large"),
    ]
    for i, (tid, genre, split, subset) in enumerate(extra):
        rows[tid] = _row(tid, genre=genre, genre_id=genre_ids.get(genre) if genre else None,
                         title=f"Fixture track {i}", artist=f"Fixture artist {i}", split=split, subset=subset,
                         artist_id=100 + i, album_id=100 + i)
    # Multi-valued list columns, quoted in the CSV as in the real file.
    rows[LARGE_IDS[0]][("track", "genres")] = "[12, 25]"
    rows[LARGE_IDS[0]][("track", "genres_all")] = "[12, 25, 89]"
    rows[LARGE_IDS[0]][("track", "tags")] = "['noise', 'rock']"
    rows[LARGE_IDS[0]][("artist", "members")] = "Someone, Someone Else\nA Third"
    for tid in (BROKEN_ID, SILENT_ID, KNOWN_BAD_ID):
        (audio / f"{tid:06d}"[:3]).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    (audio / "020" / f"{BROKEN_ID:06d}.mp3").write_bytes(rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    _silent_mp3(audio / "020" / f"{SILENT_ID:06d}.mp3")
    (audio / "099" / f"{KNOWN_BAD_ID:06d}.mp3").write_bytes(b"")  # as in the real archive: no audio
    tracks_csv = write_tracks_csv(meta / "tracks.csv", rows)
    # FMA's checksums file: "sha1  NNN/NNNNNN.mp3", one line per file of the archive.
    lines = []
    for f in sorted(audio.rglob("*.mp3")):
        lines.append(f"{_sha1(f)}  {f.relative_to(audio).as_posix()}")
    (audio / "checksums").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return FMAFixture(meta, audio, tracks_csv, labels, ids={
        "real": [int(lab["track_id"]) for lab in labels], "missing": [MISSING_ID], "broken": [BROKEN_ID],
        "silent": [SILENT_ID], "known_bad": [KNOWN_BAD_ID], "large": list(LARGE_IDS)})
