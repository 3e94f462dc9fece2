"""Genre-labelled examples from FMA, folder collections, CSV manifests and lyrics files.

Every source becomes a list of :class:`Example` (an audio file, lyrics, or both, with
a genre, a split and an artist). Examples that come without a split get a seeded,
stratified split that keeps each artist on one side (:func:`assign_splits`).
:func:`build_dataset` puts the sources of a :class:`~training.config.TrainConfig`
together: audio sources, lyrics attached to them, standalone lyrics-only examples,
the genre label set (the union of both modalities).
"""

from __future__ import annotations

import csv
import logging
import os
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

from mmgenre_core.errors import ConfigError

from . import fma
from .config import DataConfig, TrainConfig, resolve_path
from .examples import FMA_GENRES, SPLIT_NAMES, Example, Skipped, canonical_genre, normalise_split
from .lyrics_data import attach_lyrics, load_lyrics_source, standalone_examples

log = logging.getLogger(__name__)


@dataclass
class Dataset:
    examples: list[Example]
    genres: list[str]
    skipped: list[Skipped] = field(default_factory=list)

    def split(self, name: str) -> list[Example]:
        return [e for e in self.examples if e.split == name]

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"genres": list(self.genres), "n_skipped": len(self.skipped)}
        for split in SPLIT_NAMES:
            ex = self.split(split)
            out[split] = {
                "examples": len(ex),
                "audio": sum(e.has_audio for e in ex),
                "lyrics": sum(e.has_lyrics for e in ex),
                "both": sum(e.has_audio and e.has_lyrics for e in ex),
                "per_genre": dict(sorted(Counter(e.genre for e in ex).items())),
            }
        return out


# --------------------------------------------------------------------------- #
# Source specs
# --------------------------------------------------------------------------- #


def parse_source_spec(spec: str) -> dict[str, Any]:
    """``TYPE:PATH[,key=value...]`` (CLI shorthand) -> a source dict.

    ``folder:DIR``, ``manifest:FILE.csv,root=DIR``, ``lyrics:FILE.jsonl``,
    ``fma:METADATA_DIR,audio_dir=DIR,subset=medium``.
    """
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in ("folder", "manifest", "lyrics", "jsonl", "fma"):
        raise ConfigError(f"data spec {spec!r}: expected folder:DIR, manifest:CSV, lyrics:JSONL or fma:METADATA_DIR")
    parts = rest.split(",")
    out: dict[str, Any] = {"type": "jsonl" if kind in ("lyrics", "jsonl") else kind}
    out["metadata_dir" if kind == "fma" else "path"] = parts[0]
    for part in parts[1:]:
        k, eq, v = part.partition("=")
        if not eq:
            raise ConfigError(f"data spec {spec!r}: {part!r} is not key=value")
        from .config import parse_value

        out[k.strip()] = parse_value(v)
    if out["type"] == "jsonl":
        out.setdefault("standalone", True)
    return out


def _spec_fields(cls: type, spec: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(spec) - names)
    if unknown:
        raise ConfigError(f"{spec.get('type', 'source')} source: unknown option(s) {', '.join(unknown)}")
    return spec


# --------------------------------------------------------------------------- #
# Audio sources
# --------------------------------------------------------------------------- #


def read_tags(path: str | os.PathLike) -> dict[str, str]:
    """Artist / title / album from a file's tags (empty dict when unreadable)."""
    try:
        import mutagen

        audio = mutagen.File(os.fspath(path), easy=True)
    except Exception:  # noqa: BLE001 - any tag problem means "no tags"
        return {}
    if audio is None or not audio.tags:
        return {}
    out = {}
    for key in ("artist", "title", "album"):
        try:
            value = audio.tags.get(key)
        except Exception:  # noqa: BLE001
            value = None
        if value:
            text = str(value[0] if isinstance(value, list) else value).strip()
            if text:
                out[key] = text
    return out


@dataclass
class FolderSource:
    path: str
    name: str | None = None
    genre_map: dict[str, str] = field(default_factory=dict)
    read_tags: bool = True
    type: str = "folder"


def load_folder(spec: dict[str, Any]) -> tuple[list[Example], list[Skipped]]:
    """``ROOT/<genre>/...audio`` (GTZAN's layout): one genre per top-level folder."""
    from mmgenre_core.audio import find_audio_files

    src = FolderSource(**_spec_fields(FolderSource, spec))
    root = resolve_path(src.path)
    if not root.is_dir():
        raise ConfigError(f"folder source: {root} is not a folder")
    name = src.name or f"folder:{root.name}"
    examples = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        genre = canonical_genre(sub.name, src.genre_map)
        for path in find_audio_files([sub]):
            tags = read_tags(path) if src.read_tags else {}
            rel = path.relative_to(root).as_posix()
            examples.append(Example(key=f"{name}:{rel}", genre=genre, artist=tags.get("artist"),
                                    title=tags.get("title"), path=str(path), source=name))
    if not examples:
        raise ConfigError(f"folder source {root}: no audio files in genre sub-folders")
    return examples, []


@dataclass
class ManifestSource:
    path: str
    root: str | None = None
    name: str | None = None
    genre_map: dict[str, str] = field(default_factory=dict)
    read_tags: bool = True  # artist from the tags when the CSV has no artist column
    checksums: str | None = None
    type: str = "manifest"


_PATH_COLUMNS = ("path", "file", "filename", "filepath", "audio")
_GENRE_COLUMNS = ("genre", "genre_top", "label", "class")
_SPLIT_COLUMNS = ("split", "set", "subset_split")


def _pick(columns: Iterable[str], candidates: Iterable[str]) -> str | None:
    lower = {c.lower().strip(): c for c in columns}
    return next((lower[c] for c in candidates if c in lower), None)


def load_manifest(spec: dict[str, Any]) -> tuple[list[Example], list[Skipped]]:
    """A CSV of path,genre[,split][,artist][,title] (paths relative to ``root``, default
    the CSV's folder). A ``track_id`` column instead of a path means FMA's layout
    ``root/NNN/NNNNNN.mp3`` (as in FMA-style label files)."""
    src = ManifestSource(**_spec_fields(ManifestSource, spec))
    csv_path = resolve_path(src.path)
    if not csv_path.is_file():
        raise ConfigError(f"manifest source: {csv_path} not found")
    root = resolve_path(src.root) if src.root else csv_path.parent
    name = src.name or f"manifest:{csv_path.parent.name}"
    checksums = fma.read_checksums(resolve_path(src.checksums)) if src.checksums else {}
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        path_col = _pick(columns, _PATH_COLUMNS)
        id_col = _pick(columns, ("track_id",))
        genre_col = _pick(columns, _GENRE_COLUMNS)
        split_col = _pick(columns, _SPLIT_COLUMNS)
        artist_col = _pick(columns, ("artist", "artist_name"))
        title_col = _pick(columns, ("title", "track_title"))
        if genre_col is None or (path_col is None and id_col is None):
            raise ConfigError(f"{csv_path}: a manifest needs a path (or track_id) column and a genre column; "
                              f"found {', '.join(columns)}")
        examples = []
        for lineno, row in enumerate(reader, 2):
            genre = (row.get(genre_col) or "").strip()
            if not genre:
                log.warning("%s:%d: no genre, skipped", csv_path, lineno)
                continue
            track_id = None
            if path_col is not None:
                rel = row[path_col].strip()
                path = Path(rel) if os.path.isabs(rel) else root / rel
            else:
                track_id = int(row[id_col])
                path = fma.audio_path(root, track_id)
                rel = path.relative_to(root).as_posix()
            artist = (row.get(artist_col) or "").strip() if artist_col else ""
            title = (row.get(title_col) or "").strip() if title_col else ""
            if not artist and src.read_tags and path.is_file():
                tags = read_tags(path)
                artist, title = tags.get("artist", ""), title or tags.get("title", "")
            examples.append(Example(
                key=f"{name}:{rel}", genre=canonical_genre(genre, src.genre_map),
                split=normalise_split(row.get(split_col)) if split_col else None,
                artist=artist or None, title=title or None, path=str(path), source=name,
                track_id=track_id, sha1=checksums.get(os.path.normpath(rel))))
    return examples, []


def load_fma(spec: dict[str, Any]) -> tuple[list[Example], list[Skipped]]:
    """FMA from ``tracks.csv``: the subset's tracks, ``genre_top`` labels, the official split."""
    src = fma.FMASource(**_spec_fields(fma.FMASource, spec))
    meta = resolve_path(src.metadata_dir)
    tracks_path = resolve_path(src.tracks) if src.tracks else meta / "tracks.csv"
    if not tracks_path.is_file():
        raise ConfigError(f"FMA: {tracks_path} not found (download fma_metadata.zip, see training/README.md)")
    audio_dir = resolve_path(src.audio_dir) if src.audio_dir else None
    log.info("reading %s", tracks_path)
    tracks = fma.select_subset(fma.load_tracks(tracks_path), src.subset)
    genres_path = resolve_path(src.genres) if src.genres else meta / "genres.csv"
    known = None
    if genres_path.is_file():
        known = set(fma.top_level_genres(fma.load_genres(genres_path)))
    checksums: dict[str, str] = {}
    if src.verify_checksums or src.checksums:
        ck = resolve_path(src.checksums) if src.checksums else (audio_dir / "checksums" if audio_dir else None)
        if ck is None or not ck.is_file():
            raise ConfigError(f"FMA: checksums file {ck} not found")
        checksums = fma.read_checksums(ck)
    examples, skipped = [], []
    for track_id, row in tracks.iterrows():
        track_id = int(track_id)
        genre = canonical_genre(str(row[("track", "genre_top")]), src.genre_map)
        if known is not None and genre not in known and genre not in src.genre_map.values():
            log.warning("FMA track %d: genre %r is not a top-level genre of genres.csv", track_id, genre)
        path = fma.audio_path(audio_dir, track_id) if audio_dir else None
        key = f"{src.name}:{track_id:06d}"
        if src.skip_known_bad and track_id in fma.KNOWN_BAD_CLIPS:
            reason = fma.KNOWN_BAD_CLIPS[track_id]
            log.info("skipping FMA track %06d: %s", track_id, reason)
            skipped.append(Skipped(key, str(path) if path else None, reason))
            continue
        rel = os.path.normpath(f"{track_id:06d}"[:3] + f"/{track_id:06d}.mp3")
        artist = row.get(("artist", "name"))
        title = row.get(("track", "title"))
        examples.append(Example(
            key=key, genre=genre, split=normalise_split(row[("set", "split")]),
            artist=None if _isna(artist) else str(artist), title=None if _isna(title) else str(title),
            path=str(path) if path else None, source=src.name, track_id=track_id,
            sha1=checksums.get(rel)))
    log.info("FMA %s: %d tracks (%d skipped as known bad)", src.subset, len(examples), len(skipped))
    return examples, skipped


def _isna(value: Any) -> bool:
    try:
        import pandas as pd

        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):
        return value is None


AUDIO_LOADERS = {"fma": load_fma, "folder": load_folder, "manifest": load_manifest}


def load_audio_source(spec: dict[str, Any]) -> tuple[list[Example], list[Skipped]]:
    spec = dict(spec)
    kind = spec.get("type")
    if kind not in AUDIO_LOADERS:
        raise ConfigError(f"unknown audio source type {kind!r}")
    return AUDIO_LOADERS[kind](spec)


# --------------------------------------------------------------------------- #
# Splits
# --------------------------------------------------------------------------- #


def artist_group(e: Example) -> str:
    """The group a split keeps on one side: the normalised artist, or the track itself without one."""
    if e.artist and e.artist.strip():
        return "artist:" + re.sub(r"\s+", " ", e.artist.casefold().strip())
    return "track:" + e.key  # unknown artist: the track is its own group


def assign_splits(examples: list[Example], *, valid_fraction: float, test_fraction: float,
                  seed: int) -> None:
    """Give a split to every example without one, in place.

    Stratified by genre and grouped by artist (all tracks of an artist land on one
    side, so the model cannot recognise the artist instead of the genre). Groups are
    placed largest first (ties in a seeded random order), each into the split whose
    per-genre counts it brings closest to the targets.
    """
    todo = [e for e in examples if e.split is None]
    if not todo:
        return
    fractions = {"train": 1.0 - valid_fraction - test_fraction, "valid": valid_fraction, "test": test_fraction}
    groups: dict[str, list[Example]] = defaultdict(list)
    for e in todo:
        groups[artist_group(e)].append(e)
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    order.sort(key=lambda g: -len(groups[g]))  # stable: equal sizes keep the shuffled order
    totals = Counter(e.genre for e in todo)
    counts = {s: Counter() for s in SPLIT_NAMES}
    for g in order:
        add = Counter(e.genre for e in groups[g])
        best, best_cost = "train", None
        for s in SPLIT_NAMES:
            if fractions[s] <= 0:
                continue
            # Increase of sum_genre ((count - target) / total)^2 when the group joins s.
            cost = sum((a * a + 2 * a * (counts[s][genre] - fractions[s] * totals[genre])) / totals[genre] ** 2
                       for genre, a in add.items())
            if best_cost is None or cost < best_cost - 1e-12:
                best, best_cost = s, cost
        counts[best].update(add)
        for e in groups[g]:
            e.split = best


# --------------------------------------------------------------------------- #
# Everything together
# --------------------------------------------------------------------------- #


def build_dataset(cfg: TrainConfig | DataConfig, *, load_lyrics: bool = True) -> Dataset:
    """All examples of a config's data section, split, labelled and filtered."""

    data = cfg.data if isinstance(cfg, TrainConfig) else cfg
    audio: list[Example] = []
    skipped: list[Skipped] = []
    for spec in data.audio:
        ex, sk = load_audio_source(spec)
        audio.extend(ex)
        skipped.extend(sk)
    _check_unique(audio)
    assign_splits(audio, valid_fraction=data.valid_fraction, test_fraction=data.test_fraction,
                  seed=data.split_seed)
    standalone: list[Example] = []
    if load_lyrics:
        for i, spec in enumerate(data.lyrics):
            records, base = load_lyrics_source(spec)
            if spec.get("standalone", False):

                ex = standalone_examples(records, spec, base=base)
                assign_splits(ex, valid_fraction=data.valid_fraction, test_fraction=data.test_fraction,
                              seed=data.split_seed + 1 + i)
                standalone.extend(ex)
            else:
                attach_lyrics(audio, records, base=base, source=str(spec.get("path")))
    examples = audio + standalone
    _check_unique(examples)
    if data.genres:
        genres = [canonical_genre(g) for g in data.genres]
        outside = Counter(e.genre for e in examples if e.genre not in set(genres))
        if outside:
            log.warning("dropping examples of genres outside data.genres: %s", dict(outside))
        examples = [e for e in examples if e.genre in set(genres)]
    else:
        train_counts = Counter(e.genre for e in examples if e.split == "train")
        genres = sorted(g for g, n in train_counts.items() if n >= max(1, data.min_train_examples))
        dropped = Counter(e.genre for e in examples if e.genre not in set(genres))
        if dropped:
            log.warning("dropping genres with fewer than %d training examples: %s",
                        max(1, data.min_train_examples), dict(dropped))
        examples = [e for e in examples if e.genre in set(genres)]
    if not examples:
        raise ConfigError("the data sources hold no usable example")
    return Dataset(examples=examples, genres=genres, skipped=skipped)


def load_examples(specs: list[dict[str, Any]]) -> tuple[list[Example], list[Skipped]]:
    """Examples of source dicts as they are (no split assigned, no genre filtering).

    Audio sources first; lyrics files then attach to them, or (``standalone``) add
    lyrics-only examples. Used by evaluation on a given collection.
    """

    examples: list[Example] = []
    skipped: list[Skipped] = []
    for spec in specs:
        if spec.get("type") in AUDIO_LOADERS:
            ex, sk = load_audio_source(spec)
            examples.extend(ex)
            skipped.extend(sk)
    audio = list(examples)
    for spec in specs:
        if spec.get("type") == "jsonl":
            records, base = load_lyrics_source(spec)
            if spec.get("standalone", True):
                examples.extend(standalone_examples(records, spec, base=base))
            else:
                attach_lyrics(audio, records, base=base, source=str(spec.get("path")))
        elif spec.get("type") not in AUDIO_LOADERS:
            raise ConfigError(f"unknown source type {spec.get('type')!r}")
    _check_unique(examples)
    return examples, skipped


def _check_unique(examples: list[Example]) -> None:
    seen: set[str] = set()
    for e in examples:
        if e.key in seen:
            raise ConfigError(f"two examples have the key {e.key!r}: give the sources distinct 'name's")
        seen.add(e.key)


__all__ = [
    "FMA_GENRES",
    "SPLIT_NAMES",
    "Example",
    "Skipped",
    "Dataset",
    "canonical_genre",
    "normalise_split",
    "parse_source_spec",
    "read_tags",
    "load_folder",
    "load_manifest",
    "load_fma",
    "load_audio_source",
    "load_examples",
    "assign_splits",
    "artist_group",
    "build_dataset",
]
