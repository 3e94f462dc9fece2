"""Find audio files: expand files and folders into a sorted list (no decoding, no torch)."""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable
from pathlib import Path

AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {
        # libsndfile
        ".mp3", ".flac", ".ogg", ".oga", ".opus", ".wav", ".wave", ".aif", ".aiff", ".aifc",
        # FFmpeg
        ".m4a", ".m4b", ".mp4", ".aac", ".alac", ".wma", ".ape", ".wv", ".mpc", ".mka",
        ".webm", ".dsf",
    }
)

def _normalise_extensions(extensions: Collection[str]) -> frozenset[str]:
    return frozenset(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)


def _walk_audio(folder: Path, extensions: frozenset[str]) -> list[Path]:
    """Audio files under ``folder`` (recursive), hidden files and folders skipped, sorted."""
    found: list[Path] = []
    seen_dirs: set[str] = set()
    # followlinks: music libraries often link folders in; realpaths stop link loops.
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen_dirs:
            dirs[:] = []
            continue
        seen_dirs.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(
            Path(root, f)
            for f in files
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in extensions
        )
    return sorted(found)


def find_audio_files(
    paths: Iterable[str | os.PathLike[str]],
    *,
    extensions: Collection[str] = AUDIO_EXTENSIONS,
) -> list[Path]:
    """Expand files and folders into a list of audio files.

    Files named explicitly are kept whatever their extension (a bad one gets its own
    error when decoded); folders are searched recursively for ``extensions``, skipping
    hidden files and folders, and their files come sorted. Order of ``paths`` is kept
    and duplicates are dropped.

    Raises
    ------
    FileNotFoundError
        A path does not exist.
    """
    exts = _normalise_extensions(extensions)
    out: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            candidates = _walk_audio(path, exts)
        elif path.exists():
            candidates = [path]
        elif path.is_symlink():
            raise FileNotFoundError(2, "a symbolic link that points nowhere or in a loop", str(path))
        else:
            raise FileNotFoundError(2, "no such file or folder", str(path))
        for c in candidates:
            if c not in seen:
                seen.add(c)
                out.append(c)
    return out



__all__ = ["AUDIO_EXTENSIONS", "find_audio_files"]
