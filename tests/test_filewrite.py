"""beetsplug/mmgenre/filewrite.py: genre-only writes that leave a file whole when they fail."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import mutagen
import pytest

from beetsplug.mmgenre.filewrite import FileWriteError, read_genres, write_genres

from .plugin_helpers import copy_file, media  # noqa: F401


def state(path: Path) -> tuple[str, int, int]:
    st = os.stat(path)
    return hashlib.sha1(path.read_bytes()).hexdigest(), st.st_mtime_ns, st.st_ino


@pytest.fixture()
def ogg(media, tmp_path) -> Path:  # noqa: F811
    path = copy_file(media.ogg, tmp_path / "song.ogg")
    audio = mutagen.File(path)
    audio["LYRICS"] = "a sung line"
    audio.save()
    return path


def test_only_the_genre_changes(ogg: Path) -> None:
    before = {k: v for k, v in mutagen.File(ogg).tags.items()}
    write_genres(ogg, ["Rock", "Metal"])
    after = dict(mutagen.File(ogg).tags.items())
    assert read_genres(ogg) == ["Rock", "Metal"]
    assert {k: v for k, v in after.items() if k.lower() != "genre"} == \
        {k: v for k, v in before.items() if k.lower() != "genre"}


class _Boom(Exception):
    pass


@pytest.mark.parametrize("failure", [_Boom, KeyboardInterrupt], ids=["error", "ctrl-c"])
def test_a_write_that_fails_half_way_is_undone(ogg: Path, monkeypatch, failure) -> None:
    """mediafile writes part of the file, then fails: the file comes back byte for byte,
    in the same inode, with its old times; Ctrl-C still propagates."""
    from mediafile import MediaFile

    before = state(ogg)

    def half_write(self):
        with open(self.filename, "r+b") as fh:
            fh.seek(100)
            fh.write(b"\x00" * 4096)
            fh.seek(0, 2)
            fh.write(b"garbage at the end")
        raise failure("disk hiccup")

    monkeypatch.setattr(MediaFile, "save", half_write)
    with pytest.raises(FileWriteError if failure is _Boom else KeyboardInterrupt):
        write_genres(ogg, ["Rock"])
    assert state(ogg) == before
    assert not list(ogg.parent.glob(".mmgenre-*.bak"))


def test_read_only_and_missing_files_are_not_touched(ogg: Path, tmp_path: Path) -> None:
    os.chmod(ogg, 0o444)
    before = state(ogg)
    with pytest.raises(FileWriteError, match="read-only"):
        write_genres(ogg, ["Rock"])
    assert state(ogg) == before
    with pytest.raises(FileWriteError, match="gone"):
        write_genres(tmp_path / "nope.ogg", ["Rock"])
    with pytest.raises(FileWriteError, match="not a regular file"):
        write_genres(tmp_path, ["Rock"])
