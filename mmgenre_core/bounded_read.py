"""Reading a whole file a user names, in bounded memory and time.

Every file mmgenre reads whole (a model, a ``--lyrics-file``, a ``whitelist`` file)
comes through here, so none can cost a user more than its cap: a 6 GB file given as a
model, or ``/dev/zero`` as a lyrics file, is refused with a clear message instead of
being read until the kernel kills the process.

* A regular file's size is checked before a byte is read.
* A pipe (``--lyrics-file <(jq ...)``) or character device is read up to the cap, and
  only while data keeps coming: a named pipe nobody writes to, or a writer that stalls
  for ``idle_seconds``, ends the read with an error instead of a hang.
* Folders, sockets and block devices are refused.

Errors are :class:`~mmgenre_core.errors.InputFileError` (what the CLI reports with
exit status 2), worded with ``what`` ("--lyrics-file", "model file").
"""

from __future__ import annotations

import errno
import os
import select
import stat
import time

from .errors import InputFileError

#: How long a pipe may stay silent before the read gives up.
IDLE_SECONDS = 30.0


def human_bytes(n: float) -> str:
    """``n`` bytes as "512 B", "1.5 MiB", "6.0 GiB"."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _shown(path: str | os.PathLike) -> str:
    from .cli import display_text

    return display_text(os.fspath(path))


def file_size(path: str | os.PathLike, *, max_bytes: int, what: str) -> int | None:
    """The size of the regular file at ``path`` after checking it against ``max_bytes``;
    None for a pipe or character device (whose size is only known once read).

    Raises :class:`InputFileError` for a missing path, a folder or another kind of
    file, or a file over the cap.
    """
    shown = _shown(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        reason = "a symbolic link that points nowhere" if os.path.islink(path) else "no such file"
        raise InputFileError(f"{what} {shown}: {reason}") from None
    except OSError as exc:
        raise InputFileError(f"{what} {shown}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputFileError(f"{what} {shown}: is a folder, not a file")
    if stat.S_ISREG(st.st_mode):
        if st.st_size > max_bytes:
            raise InputFileError(f"{what} {shown}: {human_bytes(st.st_size)} is larger than the "
                                 f"{human_bytes(max_bytes)} a {what} may have")
        return st.st_size
    if stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode):
        return None
    raise InputFileError(f"{what} {shown}: not a regular file (a socket or a device)")


def read_bytes(path: str | os.PathLike, *, max_bytes: int, what: str, idle_seconds: float = IDLE_SECONDS) -> bytes:
    """All bytes of the file at ``path``, at most ``max_bytes`` of them.

    Raises :class:`InputFileError` with a one-line reason when the file is missing, not
    a file, over the cap, or a pipe that stays silent for ``idle_seconds``.
    """
    size = file_size(path, max_bytes=max_bytes, what=what)
    shown = _shown(path)
    try:
        if size is not None:
            with open(path, "rb") as fh:
                data = fh.read(max_bytes + 1)  # the file may have grown since the stat
        else:
            data = _read_stream(path, max_bytes=max_bytes, idle_seconds=idle_seconds, what=what, shown=shown)
    except OSError as exc:
        raise InputFileError(f"{what} {shown}: cannot be read ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise InputFileError(f"{what} {shown}: larger than the {human_bytes(max_bytes)} a {what} may have")
    return data


def _read_stream(path: str | os.PathLike, *, max_bytes: int, idle_seconds: float, what: str, shown: str) -> bytes:
    """A pipe or device, read without blocking: stops at the cap, at EOF, or after
    ``idle_seconds`` without data. A named pipe that no process holds open for writing
    reads as empty at once (Linux and BSD give EOF there, not a wait)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    chunks: list[bytes] = []
    total = 0
    try:
        last_data = time.monotonic()
        while total <= max_bytes:
            try:
                chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                    raise
                left = idle_seconds - (time.monotonic() - last_data)
                if left <= 0:
                    raise InputFileError(f"{what} {shown}: nothing came for {idle_seconds:g} s") from None
                select.select([fd], [], [], min(left, 1.0))
                continue
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            last_data = time.monotonic()
    finally:
        os.close(fd)
    return b"".join(chunks)


def read_text_file(path: str | os.PathLike, *, max_bytes: int, what: str) -> str:
    """:func:`read_bytes` decoded as UTF-8 (a BOM is dropped); not UTF-8 is an
    :class:`InputFileError` naming the first bad byte."""
    data = read_bytes(path, max_bytes=max_bytes, what=what)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{what} {_shown(path)}: not UTF-8 text (byte {exc.start})") from None


__all__ = ["IDLE_SECONDS", "human_bytes", "file_size", "read_bytes", "read_text_file"]
