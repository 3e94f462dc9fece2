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

beets' ``write`` event is not sent: its listeners (``scrub``, ``zero``) expect the full
set of tags beets is about to write, and would act on a genre-only write as if the
other tags were being removed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence


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
