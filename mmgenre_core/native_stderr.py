"""Keep the C decoders' own warnings off the terminal.

libsndfile decodes MP3 with libmpg123, which prints warnings such as "Warning: Xing
stream size off by more than 1%, fuzzy seeking may be even more fuzzy than by
design!" straight to file descriptor 2, past Python's logging. They say nothing a
user can act on (the file decodes; a damaged one gets its own error), so during a run
:func:`filtered_native_stderr` puts a pipe on descriptor 2 and forwards everything
except those lines to the real stderr; the number dropped is logged at debug level.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import sys
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

#: libmpg123's messages: "Warning: ...", "Note: ...", "[src/libmpg123/...:123] error: ...".
NATIVE_NOISE = re.compile(
    rb"^(?:\[[^\]]*(?:libmpg123|mpg123)[^\]]*\].*"
    rb"|(?:Warning|Note): (?:Xing stream size|Illegal Audio-MPEG-Header|Trying to resync|Skipped \d+ bytes"
    rb"|Encountered more data|Big change|Junk at the beginning|Cannot determine|Hit end of).*"
    rb"|Big change \(MPEG version, layer, rate\).*)\r?\n?$"
)


def _forward(read_fd: int, out_fd: int, dropped: list[int]) -> None:
    """Copy ``read_fd`` to ``out_fd`` line by line, dropping decoder noise, until EOF."""
    pending = b""
    while True:
        ready, _, _ = select.select([read_fd], [], [], 0.1)
        if not ready:
            if pending:  # a prompt or progress bar without a newline: pass it on now
                os.write(out_fd, pending)
                pending = b""
            continue
        data = os.read(read_fd, 65536)
        if not data:
            break
        pending += data
        *lines, pending = re.split(rb"(?<=[\n\r])", pending)
        for line in lines:
            if NATIVE_NOISE.match(line):
                dropped[0] += 1
            else:
                os.write(out_fd, line)
    if pending and not NATIVE_NOISE.match(pending):
        os.write(out_fd, pending)


#: While the filter runs: a descriptor of the real stderr (descriptor 2 is then a pipe).
_REAL_STDERR_FD: int | None = None


def stderr_is_terminal() -> bool:
    """Whether what is written to stderr reaches a terminal, also while the filter runs
    (``sys.stderr.isatty()`` is then False: descriptor 2 is the filter's pipe, and a
    progress bar meant for a terminal never showed)."""
    fd = _REAL_STDERR_FD
    try:
        return os.isatty(fd) if fd is not None else bool(sys.stderr.isatty())
    except (AttributeError, OSError, ValueError):
        return False


def stderr_columns() -> int | None:
    """The width of the terminal stderr reaches (None: not a terminal)."""
    fd = _REAL_STDERR_FD if _REAL_STDERR_FD is not None else 2
    try:
        return os.get_terminal_size(fd).columns
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def filtered_native_stderr() -> Iterator[None]:
    """During the block, decoder warnings written to descriptor 2 are dropped.

    A no-op where descriptor 2 cannot be replaced (no fd, Windows, nested use).
    """
    if os.name != "posix" or getattr(filtered_native_stderr, "_active", False):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    dropped = [0]
    thread = threading.Thread(target=_forward, args=(read_fd, saved, dropped), name="mmgenre-stderr", daemon=True)
    thread.start()
    filtered_native_stderr._active = True  # type: ignore[attr-defined]
    global _REAL_STDERR_FD
    _REAL_STDERR_FD = saved
    try:
        yield
    finally:
        _REAL_STDERR_FD = None
        filtered_native_stderr._active = False  # type: ignore[attr-defined]
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last writer goes: the forwarder sees EOF
        thread.join(timeout=2.0)
        os.close(read_fd)
        os.close(saved)
        if dropped[0]:
            log.debug("%d decoder warning(s) (libmpg123) not shown", dropped[0])


__all__ = ["NATIVE_NOISE", "filtered_native_stderr", "stderr_is_terminal", "stderr_columns"]
