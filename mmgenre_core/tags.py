"""Lyrics embedded in audio files, read with mutagen.

Covers the tags beets and common taggers write: ID3 ``USLT`` (and ``SYLT`` text as
a fallback), Vorbis comments ``LYRICS``/``UNSYNCEDLYRICS`` (FLAC, Ogg, Opus), MP4
``\\xa9lyr``, APEv2 ``Lyrics`` and ASF ``WM/Lyrics``. Never raises for a bad file:
lyrics are optional, so an unreadable tag simply means "no lyrics".
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

_TEXT_KEYS = ("lyrics", "unsyncedlyrics", "unsynced lyrics", "\xa9lyr", "wm/lyrics", "lyric")


def _as_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        parts = [t for t in (_as_text(v) for v in value) if t]
        return "\n".join(parts) if parts else None
    text = getattr(value, "text", value)  # ID3 frames carry .text
    if isinstance(text, (list, tuple)):
        return _as_text(list(text))
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str):
        text = str(getattr(value, "value", text))
    text = text.strip()
    return text or None


def read_embedded_lyrics(path: str | os.PathLike) -> str | None:
    """The unsynchronised lyrics stored in ``path``'s tags, or None."""
    try:
        import mutagen

        audio = mutagen.File(os.fspath(path))
    except Exception as exc:  # mutagen raises many types for odd files
        log.debug("cannot read tags of %s: %s", path, exc)
        return None
    if audio is None or audio.tags is None:
        return None
    tags = audio.tags
    try:
        # ID3 (MP3, AIFF, WAV with ID3 chunk): USLT frames, keyed "USLT::lang".
        if hasattr(tags, "getall"):
            found = [_as_text(f) for f in tags.getall("USLT")]
            found = [t for t in found if t]
            if found:
                return max(found, key=len)
            sylt = tags.getall("SYLT")
            if sylt:
                return _as_text(["".join(text for text, _ in f.text) for f in sylt])
            return None
        for key in list(tags.keys()):
            if str(key).lower() in _TEXT_KEYS:
                text = _as_text(tags[key])
                if text:
                    return text
    except Exception as exc:
        log.debug("cannot read lyrics tag of %s: %s", path, exc)
    return None


def embedded_lyrics(path: str) -> tuple[str | None, str]:
    """``(text, "tag")``: :func:`read_embedded_lyrics` as a lyrics source for
    :meth:`GenreClassifier.iter_predict <mmgenre_core.predict.GenreClassifier.iter_predict>`
    (``lyrics=embedded_lyrics``), read in its decoding threads."""
    return read_embedded_lyrics(path), "tag"

