"""``mmgenre predict --lyrics-file F.jsonl``: lyrics for the tracks, one JSON object a line.

Each line is ``{"path": ..., "lyrics": ...}`` (``"file"`` is accepted for ``"path"``).
:func:`read_lyrics_file` reads the file through the bounded reader (a size cap, no hang
on a pipe) and keeps each usable line; :class:`LyricsFile.lookup` finds a track's lyrics.

How a line's path names a track: an absolute path is that file; a relative one is tried
against the lyrics file's folder, the current folder and every folder given on the
command line (a file given there counts with its folder), so ``"a.mp3"`` names
``music/a.mp3`` in ``mmgenre predict --lyrics-file l.jsonl music``. Both sides are compared
by their real path, so a symlinked folder on either side still matches. Lines that name
no track given are counted and reported in one warning.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .bounded_read import read_bytes
from .errors import InputFileError
from .text import MAX_LYRICS_CHARS

log = logging.getLogger("mmgenre")

#: The largest lyrics file read (a library of 100,000 songs' lyrics is about 200 MB).
MAX_LYRICS_FILE_BYTES = 256 * 1024 * 1024


@dataclass
class LyricsFile:
    """The usable lines of a lyrics file: (path as written, lyrics), in file order."""

    path: str
    entries: list[tuple[str, str]] = field(default_factory=list)
    _by_real_path: dict[str, str] | None = field(default=None, repr=False)
    _owner: dict[str, str] = field(default_factory=dict, repr=False)  # real path -> path as written
    _matched: set[str] = field(default_factory=set, repr=False)  # paths as written that named a track

    def resolve(self, bases: Iterable[str]) -> None:
        """Index the entries by real path, relative ones against the lyrics file's folder,
        the current folder and ``bases`` (the folders given on the command line), in that order."""
        folders = _unique([os.path.dirname(os.path.abspath(self.path)), os.getcwd(), *bases])
        index: dict[str, str] = {}
        first: dict[str, str] = {}
        for written, lyrics in self.entries:  # the first line for a path wins
            first.setdefault(written, lyrics)
        for written, lyrics in first.items():
            candidates = [written] if os.path.isabs(written) else [os.path.join(f, written) for f in folders]
            for candidate in candidates:
                real = os.path.realpath(candidate)
                if os.path.exists(real):
                    if real not in index:
                        index[real], self._owner[real] = lyrics, written
                    break
        self._by_real_path = index

    def lookup(self, track: str) -> str | None:
        """The lyrics the file gives for the audio file ``track`` (None: none)."""
        if self._by_real_path is None:
            self.resolve(())
        real = os.path.realpath(track)
        text = self._by_real_path.get(real)  # type: ignore[union-attr]
        if text is not None:
            self._matched.add(self._owner[real])
        return text

    def report_unmatched(self, tracks: Sequence[str]) -> None:
        """One warning when lines of the file named none of ``tracks`` (looked up already)."""
        for track in tracks:
            self.lookup(track)
        written = list(dict.fromkeys(w for w, _ in self.entries))
        unmatched = [w for w in written if w not in self._matched]
        if not unmatched:
            return
        from .cli import display_text

        share = "none" if len(unmatched) == len(written) else f"{len(unmatched)}"
        log.warning("--lyrics-file %s: %s of its %d paths match no audio file given (first: %s); a relative "
                    "path is taken from the lyrics file's folder, the current folder or a folder given",
                    display_text(self.path), share, len(self.entries), display_text(unmatched[0]))


def _unique(folders: Iterable[str]) -> list[str]:
    out: list[str] = []
    for folder in folders:
        folder = os.path.abspath(folder)
        if folder not in out:
            out.append(folder)
    return out


def command_line_folders(paths: Iterable[str]) -> list[str]:
    """The folders the command line names: a folder itself, a file's folder."""
    return _unique(p if os.path.isdir(p) else os.path.dirname(os.path.abspath(p)) for p in paths)


def read_lyrics_file(path: str | os.PathLike) -> LyricsFile:
    """The usable lines of the JSON-lines file at ``path``.

    Lyrics longer than the model reads (:data:`~mmgenre_core.text.MAX_LYRICS_CHARS`) are
    cut there. A few malformed lines are skipped with one warning; a file that is
    missing, a folder, over :data:`MAX_LYRICS_FILE_BYTES`, not UTF-8, or without any
    usable line raises :class:`InputFileError` (the CLI's exit status 2).
    """
    from .cli import display_text

    path = os.fspath(path)
    shown = display_text(path)
    data = read_bytes(path, max_bytes=MAX_LYRICS_FILE_BYTES, what="--lyrics-file")
    out = LyricsFile(path)
    bad: list[tuple[int, str]] = []
    start, lineno = 0, 0
    if data.startswith(b"\xef\xbb\xbf"):
        start = 3
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        raw, start = data[start:end], end + 1
        lineno += 1
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputFileError(f"--lyrics-file {shown}: not UTF-8 text (line {lineno}, byte {exc.start})") from None
        if not line.strip():
            continue
        reason = _add_line(out, line)
        if reason:
            bad.append((lineno, reason))
    if bad and not out.entries:
        raise InputFileError(
            f"--lyrics-file {shown}: no usable line ({len(bad)} lines; line {bad[0][0]}: {bad[0][1]}); "
            'expected one {"path": ..., "lyrics": ...} object per line')
    if not out.entries:
        raise InputFileError(f"--lyrics-file {shown}: empty; expected one {{\"path\": ..., \"lyrics\": ...}} "
                             "object per line")
    if bad:
        log.warning("%s: %d malformed lines skipped (first: line %d, %s)", shown, len(bad), bad[0][0], bad[0][1])
    return out


def _add_line(out: LyricsFile, line: str) -> str | None:
    """Add one line's entry to ``out``; the reason it is unusable, or None."""
    try:
        rec = json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        return "not JSON"
    if not isinstance(rec, dict):
        return "not a JSON object"
    track, lyrics = rec.get("path") or rec.get("file"), rec.get("lyrics")
    if not isinstance(track, str) or not track or not isinstance(lyrics, str):
        return "needs a 'path' and a 'lyrics' string"
    if "\0" in track:
        return "a path with a NUL character"
    out.entries.append((track, lyrics[:MAX_LYRICS_CHARS]))
    return None


__all__ = ["LyricsFile", "MAX_LYRICS_FILE_BYTES", "command_line_folders", "read_lyrics_file"]
