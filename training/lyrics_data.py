"""Lyrics for training: JSON-lines files, attached to tracks or standalone, encoded for the HAN.

A lyrics file holds one JSON object a line with a ``lyrics`` text and a way to find
its track: ``track_id`` (FMA), ``path`` (an audio file, absolute or relative to the
lyrics file's folder) or ``key`` (an example key). With ``standalone: true`` each
record is an example of its own (lyrics only) labelled by its ``genre`` field, split
by its ``split`` field or by a seeded artist-disjoint split of its own.

Encoding uses :func:`mmgenre_core.text.encode_lyrics`, the very function inference
uses, so training and inference see the same ids.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from mmgenre_core.config import TextConfig
from mmgenre_core.errors import ConfigError
from mmgenre_core.text import PAD_ID, Vocabulary, encode_lyrics, tokenize_lyrics

from .config import resolve_path
from .examples import Example, canonical_genre, normalise_split

log = logging.getLogger(__name__)

_SOURCE_KEYS = {"type", "path", "standalone", "name", "genre_map", "match", "exclude", "first_artist", "domain",
                "domain_field"}


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of a JSON-lines file; malformed lines and records without lyrics are logged and skipped."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s:%d: not JSON, skipped", path, lineno)
                continue
            if not isinstance(rec, dict):
                log.warning("%s:%d: not a JSON object, skipped", path, lineno)
                continue
            text = rec.get("lyrics", rec.get("text"))
            if not isinstance(text, str) or not text.strip():
                continue
            rec["lyrics"] = text
            rec["_line"] = lineno
            out.append(rec)
    return out


def load_lyrics_source(spec: dict[str, Any]) -> tuple[list[dict[str, Any]], Path]:
    unknown = sorted(set(spec) - _SOURCE_KEYS)
    if unknown:
        raise ConfigError(f"lyrics source: unknown option(s) {', '.join(unknown)}")
    path = resolve_path(spec["path"])
    if not path.is_file():
        raise ConfigError(f"lyrics file not found: {path}")
    records = read_jsonl(path)
    log.info("%s: %d lyrics records", path, len(records))
    return records, path.parent


def attach_lyrics(examples: list[Example], records: list[dict[str, Any]], *, base: Path,
                  source: str = "lyrics") -> int:
    """Give audio examples the lyrics of the records that name them; returns how many got lyrics."""
    by_id = {e.track_id: e for e in examples if e.track_id is not None}
    by_path = {os.path.normcase(os.path.abspath(e.path)): e for e in examples if e.path}
    by_key = {e.key: e for e in examples}
    attached = unmatched = 0
    for rec in records:
        target = None
        if rec.get("key") is not None:
            target = by_key.get(str(rec["key"]))
        if target is None and rec.get("track_id") is not None:
            try:
                target = by_id.get(int(rec["track_id"]))
            except (TypeError, ValueError):
                target = None
        if target is None and rec.get("path"):
            p = str(rec["path"])
            candidates = [p] if os.path.isabs(p) else [str(base / p), str(resolve_path(p))]
            target = next((by_path[k] for k in (os.path.normcase(os.path.abspath(c)) for c in candidates)
                           if k in by_path), None)
        if target is None:
            unmatched += 1
            continue
        target.lyrics = rec["lyrics"]
        attached += 1
    log.info("%s: lyrics attached to %d tracks (%d records name no track of the dataset)",
             source, attached, unmatched)
    return attached


def excluded(rec: dict[str, Any], exclude: dict[str, Any]) -> bool:
    """Whether a source's ``exclude`` rules drop this record: ``{field: [values]}`` drops a
    record whose field holds one of the values, ``{field: true}`` one where it is set at all
    (e.g. ``{"text_form": ["flattened_lowercase"], "overlaps_existing": true}``)."""
    for field, rule in exclude.items():
        value = rec.get(field)
        if rule is True:
            if value not in (None, "", [], False):
                return True
        elif isinstance(rule, list) and value in rule:
            return True
    return False


def _check_exclude(exclude: Any) -> dict[str, Any]:
    if exclude is None:
        return {}
    if not isinstance(exclude, dict) or not all(r is True or isinstance(r, list) for r in exclude.values()):
        raise ConfigError("lyrics source: 'exclude' must map record fields to a list of values or true")
    return exclude


def standalone_examples(records: list[dict[str, Any]], spec: dict[str, Any], *, base: Path) -> list[Example]:
    """Lyrics-only examples from records with a ``genre``, less those the source's
    ``exclude`` rules drop; with ``first_artist`` the artist (the split's group) is the
    first credited one of a comma-separated list.

    Domains (:attr:`Example.domain`): ``domain`` puts every record of the source in that
    domain, ``domain_field`` a record whose field is set in ``"<name>:<value>"`` (e.g.
    ``"lyrics_large:musixmatch_30pct_excerpt"``); the rest have none, the kind of lyrics
    inference reads."""
    name = spec.get("name") or f"lyrics:{Path(spec['path']).stem}"
    genre_map = spec.get("genre_map") or {}
    exclude = _check_exclude(spec.get("exclude"))
    domain, domain_field = spec.get("domain"), spec.get("domain_field")
    for key, value in (("domain", domain), ("domain_field", domain_field)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigError(f"lyrics source {name}: '{key}' must be a non-empty string")
    out, no_genre, dropped = [], 0, 0
    for rec in records:
        if excluded(rec, exclude):
            dropped += 1
            continue
        genre = rec.get("genre")
        if not isinstance(genre, str) or not genre.strip():
            no_genre += 1
            continue
        rid = rec.get("id", rec.get("track_id", rec.get("key", f"line{rec['_line']}")))
        artist = rec.get("artist") or None
        if artist and spec.get("first_artist"):
            artist = str(artist).split(",")[0].strip() or None
        kind = rec.get(domain_field) if domain_field else None
        out.append(Example(
            key=f"{name}:{rid}", genre=canonical_genre(genre, genre_map), split=normalise_split(rec.get("split")),
            artist=artist, title=rec.get("title") or None, lyrics=rec["lyrics"], source=name,
            domain=f"{name}:{kind}" if kind not in (None, "", False) else domain))
    if no_genre:
        log.warning("%s: %d records without a genre skipped", name, no_genre)
    if dropped:
        log.info("%s: %d records left out by the source's exclude rules", name, dropped)
    return out


# --------------------------------------------------------------------------- #
# Encoding
# --------------------------------------------------------------------------- #


def tokenize_all(texts: list[str], config: TextConfig) -> list[list[list[str]]]:
    """Each text -> its tokenised lines (as the HAN will see them, before truncation)."""
    return [tokenize_lyrics(t, config=config) for t in texts]


def build_vocabulary(train_docs: list[list[list[str]]], config: TextConfig, *, max_size: int,
                     min_count: int = 1) -> Vocabulary:
    """Vocabulary of the training lyrics, counted on the part the HAN reads (50 x 20)."""
    clipped = [[line[: config.max_words] for line in doc[: config.max_lines]] for doc in train_docs]
    return Vocabulary.build(clipped, max_size=max_size, min_count=min_count)


def encode_grid(texts: list[str], vocab: Vocabulary, config: TextConfig) -> tuple[np.ndarray, np.ndarray]:
    """Texts -> ids int32 [shape=(n, max_lines, max_words)] and has_lyrics bool [shape=(n,)]."""
    ids = np.full((len(texts), config.max_lines, config.max_words), PAD_ID, dtype=np.int32)
    has = np.zeros(len(texts), dtype=bool)
    for i, text in enumerate(texts):
        enc = encode_lyrics(text, vocab=vocab, config=config)
        ids[i] = enc.ids
        has[i] = enc.has_lyrics
    return ids, has


__all__ = [
    "read_jsonl",
    "load_lyrics_source",
    "attach_lyrics",
    "excluded",
    "standalone_examples",
    "tokenize_all",
    "build_vocabulary",
    "encode_grid",
]
