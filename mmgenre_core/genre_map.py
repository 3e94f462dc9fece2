"""Genre names as users write them: one comparison key, and the ``genre_map`` option.

Shared by the beets plugin's tagging rules (``beetsplug/mmgenre/tagging.py``) and by
``--learn`` (:mod:`mmgenre_core.learn`), which matches a library's genres to the
model's through the same map. Genre names compare case-insensitively everywhere
(``Hip Hop`` == ``hip hop``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def genre_key(name: str) -> str:
    """The comparison key of a genre name: trimmed, case-folded, single spaces."""
    return " ".join(str(name).split()).casefold()


def unique_genres(genres: Iterable[str]) -> list[str]:
    """``genres`` without blanks and without case-insensitive duplicates, order kept."""
    seen: set[str] = set()
    out: list[str] = []
    for genre in genres:
        if genre is None:
            continue
        name = " ".join(str(genre).split())
        key = name.casefold()
        if name and key not in seen:
            seen.add(key)
            out.append(name)
    return out


def parse_genre_map(raw: Mapping[str, object] | None) -> dict[str, str | None]:
    """Normalise the ``genre_map`` option: {model genre key: user name or None (drop)}.

    Values may be a string, an empty string / ``null`` / ``false`` (drop the genre).
    """
    out: dict[str, str | None] = {}
    for source, target in (raw or {}).items():
        if target is None or target is False or (isinstance(target, str) and not target.strip()):
            out[genre_key(source)] = None
        elif isinstance(target, str):
            out[genre_key(source)] = " ".join(target.split())
        else:
            raise ValueError(f"genre_map: {source!r} must map to a genre name or null, not {target!r}")
    return out


def map_genre(genre: str, genre_map: Mapping[str, str | None]) -> str | None:
    """The user's name for a model genre (itself when unmapped; None when dropped)."""
    key = genre_key(genre)
    if key in genre_map:
        return genre_map[key]
    return " ".join(str(genre).split()) or None


__all__ = ["genre_key", "unique_genres", "parse_genre_map", "map_genre"]
