"""Writing mmgenre's genres into a track's file: the genre tag only, all or nothing.

beets' ``item.try_write()`` writes every field the library holds, so a tag the library
does not know (lyrics embedded by another tool after import) is overwritten with the
library's empty value. mmgenre changes only the genre, so it writes only the genre:
:func:`write_genres` opens the file with mediafile, sets ``genres`` and saves. Every
other tag keeps its value; an MP3's ID3 frames are saved in the version the caller
asks for (the plugin passes beets' ``id3v23`` setting, as ``beet write`` would).

A failed write must not leave a damaged file (mutagen can fail half-way: a streaming
WAV with 0xFFFFFFFF sizes got 8 stray bytes appended). So the file is copied aside
first and, if the write fails for any reason (Ctrl-C included), copied back into the
same inode with its old times: the file is byte-identical to before.

Nor may a write that "succeeds" change anything but the genre. Before writing, a
container whose own sizes disagree with the file's is refused (:mod:`.containers`: a
WAV whose header claimed ten times its size had its tag written into its audio). After
writing, the file is read back: the genres must read as written, every other tag must
hold what it held (mutagen drops a text frame whose value is empty, such as an album
tag that is one NUL), and the stream must have the same length, rate and channels.
Anything else puts the old file back and fails the write with the reason.

beets' ``write`` event is not sent: its listeners (``scrub``, ``zero``) expect the full
set of tags beets is about to write, and would act on a genre-only write as if the
other tags were being removed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

from .containers import size_problem


class FileWriteError(Exception):
    """The file could not be written; it was left (or put back) exactly as it was."""


def _restore(path: str, backup: str, times: tuple[int, int]) -> None:
    """Copy ``backup``'s bytes back into ``path`` (same inode, owner and mode) and its times."""
    with open(backup, "rb") as src, open(path, "r+b") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.truncate()
        dst.flush()
        os.fsync(dst.fileno())
    os.utime(path, ns=times)


def write_genres(path: str | bytes, genres: Sequence[str], *, lyrics: str | None = None,
                 id3v23: bool = False) -> None:
    """Set the genre tag of the audio file at ``path`` to ``genres`` (and, when given,
    its lyrics: ``store_lyrics``), changing nothing else.

    ``id3v23``: save MP3 tags as ID3v2.3 (default: v2.4, mediafile's and beets'). Raises
    :class:`FileWriteError` with a one-line reason; the file is then unchanged.
    """
    from mediafile import MediaFile

    path = os.fsdecode(path)
    if not os.path.isfile(path):
        raise FileWriteError("the file is gone" if not os.path.lexists(path) else "not a regular file")
    # The mode bits count even for root (who may write anything): a file its owner
    # made read-only is left alone.
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise FileWriteError(f"cannot be read ({exc.strerror or exc})") from exc
    if not os.access(path, os.R_OK | os.W_OK) or not stat.st_mode & 0o222:
        raise FileWriteError("the file is read-only")
    try:
        problem = size_problem(path)
    except OSError as exc:
        raise FileWriteError(f"cannot be read ({exc.strerror or exc})") from exc
    if problem:
        raise FileWriteError(f"its container disagrees with its size ({problem}); not written")
    before = _readable_state(path, id3v23=id3v23)
    try:
        fd, backup = tempfile.mkstemp(prefix=".mmgenre-", suffix=".bak", dir=_backup_folder(path, stat.st_size))
    except OSError as exc:
        raise FileWriteError(f"cannot make a safety copy ({exc.strerror or exc})") from exc
    keep_backup = False
    try:
        with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
        try:
            media = MediaFile(path, id3v23=id3v23)
            media.genres = list(genres)
            if lyrics is not None:
                media.lyrics = lyrics
            media.save()
            _check_written(path, before, list(genres), lyrics_written=lyrics is not None, id3v23=id3v23)
        except BaseException as exc:
            try:
                _restore(path, backup, (stat.st_atime_ns, stat.st_mtime_ns))
            except OSError as restore_exc:  # pragma: no cover - the disk failed under us
                keep_backup = True
                raise FileWriteError(f"write failed ({_reason(exc)}) and restoring the file failed "
                                     f"({restore_exc}); its old content is kept at {backup}") from exc
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            raise FileWriteError(_reason(exc)) from exc
    finally:
        if not keep_backup:
            os.unlink(backup)


class _NotAsWritten(Exception):
    """The file read back differs from what was written (the reason is the message)."""


#: Tag keys of the genre and of the lyrics, per tag format (ID3 frame ids, Vorbis
#: comment names, MP4 atoms, APEv2 and ASF names), compared case-insensitively.
_GENRE_KEYS = {"tcon", "genre", "\xa9gen", "gnre", "wm/genre"}
_LYRICS_KEYS = ("uslt", "lyrics", "unsyncedlyrics", "\xa9lyr", "wm/lyrics")


def _readable_state(path: str, *, id3v23: bool) -> dict[str, Any] | None:
    """What a write must not change: every tag's content (by key) and the stream's
    length, rate and channels, as mutagen reads them; None when mutagen cannot read the
    file (the write itself will fail with its own reason)."""
    import mutagen

    try:
        audio = mutagen.File(path)
    except Exception:
        return None
    if audio is None:
        return None
    tags: dict[str, str] = {}
    for key, value in (audio.tags.items() if audio.tags is not None and hasattr(audio.tags, "items") else ()):
        tags.setdefault(str(key).lower(), "")
        tags[str(key).lower()] += _content(value, id3v23=id3v23)
    info = getattr(audio, "info", None)
    stream = tuple(round(float(getattr(info, name, 0) or 0), 1) for name in ("length", "sample_rate", "channels"))
    return {"tags": tags, "stream": stream}


def _content(value: Any, *, id3v23: bool) -> str:
    """A tag value's content, independent of how it is encoded (an ID3v2.4 -> v2.3 save
    re-encodes text, and v2.3 joins several values with "/": no change of content)."""
    from mutagen.id3 import Frame

    if isinstance(value, Frame):
        parts = [repr(getattr(value, attr, None)) for attr in ("desc", "lang", "owner", "mime", "type", "email")]
        text = getattr(value, "text", None)
        if text is not None:
            texts = [str(t) for t in text]
            parts.append(("/" if id3v23 else "\0").join(texts))
        data = getattr(value, "data", None)
        if isinstance(data, bytes):
            parts.append(hashlib.sha1(data).hexdigest())
        return "|".join(parts)
    if isinstance(value, bytes):  # pictures, MP4 free-form atoms: by hash, not a 20 MB repr
        return "sha1:" + hashlib.sha1(value).hexdigest()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_content(v, id3v23=id3v23) for v in value) + "]"
    return repr(value)


def _check_written(path: str, before: dict[str, Any] | None, genres: list[str], *, lyrics_written: bool,
                   id3v23: bool) -> None:
    """Raise :class:`_NotAsWritten` unless the file reads back with ``genres`` and every
    other tag and the stream as ``before``."""
    got = read_genres(path)
    if got != list(genres):
        raise _NotAsWritten(f"the genres read back as {got!r}, not {list(genres)!r}")
    if before is None:
        return
    after = _readable_state(path, id3v23=id3v23)
    if after is None:
        raise _NotAsWritten("the file cannot be read back")
    if after["stream"] != before["stream"]:
        raise _NotAsWritten(f"the audio stream reads differently ({before['stream']} -> {after['stream']})")

    def others(tags: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in tags.items() if k.split(":")[0] not in _GENRE_KEYS
                and not (lyrics_written and k.split(":")[0].startswith(_LYRICS_KEYS))}

    old, new = others(before["tags"]), others(after["tags"])
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        raise _NotAsWritten(f"writing the genre would also change {', '.join(changed[:5])} "
                            "(a tag the writer cannot keep as it is)")


def _backup_folder(path: str, size: int) -> str:
    """Where the safety copy goes: the system's temp folder when it has room for it
    (it may be a RAM disk), else the file's own folder."""
    temp = tempfile.gettempdir()
    try:
        if shutil.disk_usage(temp).free > 2 * size + (64 << 20):
            return temp
    except OSError:
        pass
    return os.path.dirname(os.path.abspath(path))


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, _NotAsWritten):
        return f"{text}; not written"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:300]


def read_genres(path: str | bytes) -> list[str] | None:
    """The genres in the file's tags (None when it cannot be read)."""
    from mediafile import MediaFile

    try:
        return list(MediaFile(os.fsdecode(path)).genres or [])
    except Exception:
        return None


__all__ = ["FileWriteError", "read_genres", "write_genres"]
