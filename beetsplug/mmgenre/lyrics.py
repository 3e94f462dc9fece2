"""Where a track's lyrics come from: one chain, one set of source names.

The chain, first text with words wins:

1. ``library``: the library's ``lyrics`` field (beets' lyrics plugin, or the user);
2. ``tag``: the lyrics embedded in the file (ID3 USLT, Vorbis/FLAC LYRICS, MP4 ©lyr);
3. ``genius``: Genius, when a token is set (``mmgenre_core.genius.GeniusClient``).

``none`` when no source has words. The classifier is handed the text and never reads a
tag itself. :class:`LyricsQuery` is read from the item in the main thread (beets'
database connections belong to their thread); :func:`find_lyrics` runs anywhere, so
the plugin looks a chunk of tracks up in a background thread while the model works.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmgenre_core.genius import GeniusClient

LIBRARY, TAG, GENIUS, NONE = "library", "tag", "genius", "none"
#: Every source name, as the plugin logs it (the CLI adds "file" for ``--lyrics-file``).
SOURCES = (LIBRARY, TAG, GENIUS, NONE)

@dataclass(frozen=True)
class LyricsQuery:
    """What the lookup of one item needs."""

    library_text: str | None
    path: str
    artist: str
    title: str

    @classmethod
    def of(cls, item: Any) -> "LyricsQuery":
        """From a beets item (call in the thread that owns the library)."""
        return cls(item.get("lyrics", with_album=False) or None, os.fsdecode(item.path),
                   item.get("artist", with_album=False) or item.get("albumartist", with_album=False) or "",
                   item.get("title", with_album=False) or "")


def find_lyrics(query: LyricsQuery, *, genius: GeniusClient | None,
                debug: Callable[[str], None] | None = None) -> tuple[str | None, str]:
    """(text, source) from the first source of the chain that has words; (None, NONE) otherwise."""
    from mmgenre_core.tags import read_embedded_lyrics
    from mmgenre_core.text import has_words

    if query.library_text and has_words(query.library_text):
        return query.library_text, LIBRARY
    text = read_embedded_lyrics(query.path)
    if text and has_words(text):
        return text, TAG
    if genius is not None:
        result = genius.fetch(query.artist, query.title)
        if result.lyrics and has_words(result.lyrics):
            if debug is not None:
                debug(f"lyrics of {query.artist} - {query.title} from Genius ({result.status})")
            return result.lyrics, GENIUS
    return None, NONE


def find_all(queries: Sequence[LyricsQuery], *, genius: GeniusClient | None,
             debug: Callable[[str], None] | None = None) -> list[tuple[str | None, str]]:
    """:func:`find_lyrics` of each query, in order (a cancelled Genius client answers at once)."""
    return [find_lyrics(q, genius=genius, debug=debug) for q in queries]


__all__ = ["LIBRARY", "TAG", "GENIUS", "NONE", "SOURCES", "LyricsQuery", "find_lyrics", "find_all"]
