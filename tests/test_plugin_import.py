"""Automatic tagging during ``beet import`` (as-is and autotagged), on real files.

The genres must be in the library *and* in the imported files (read back with
mutagen) for MP3, FLAC and Ogg Vorbis, also for as-is imports where beets does
not write plugin changes itself; nothing a file or Genius does may abort an import.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from beets.test.helper import AutotagImportHelper, ImportHelper, PluginMixin

from .conftest import DATA_DIR
from .plugin_helpers import (GeniusServer, MMGenrePluginMixin, copy_file, genius_config, lyrics_records,  # noqa: F401
                             media, models, needs_data, read_genres, set_tags, truncated_mp3)

pytestmark = needs_data


class ImportTestBase(MMGenrePluginMixin, PluginMixin, ImportHelper):
    def prepare_album(self, name: str = "album", sources=None, *, album: str = "Import Album",
                      artist: str = "Import Artist") -> list[Path]:
        """An album folder of real files (MP3, FLAC, Ogg by default) with plain tags, no genre."""
        folder = self.import_path / name
        sources = sources or [self.media.mp3[0], self.media.flac, self.media.ogg]
        paths = []
        for n, src in enumerate(sources, 1):
            dst = copy_file(src, folder / f"{n:02d} {Path(src).name}")
            set_tags(dst, title=f"Track {n} of {name}", artist=artist, album=album, tracknumber=str(n))
            paths.append(dst)
        return paths

    def import_asis(self, **kwargs):
        self.setup_importer(autotag=False, **kwargs).run()


class TestAsIsImport(ImportTestBase):
    def test_genres_in_library_and_files(self):
        sources = self.prepare_album()
        self.import_asis()

        items = list(self.lib.items())
        assert len(items) == 3
        formats = set()
        for item in items:
            assert item.genres == ["Rock"]
            assert item["mmgenre_genre"] == "Rock" and item["mmgenre_model"] == "tiny@1"
            path = os.fsdecode(item.path)
            assert path.startswith(str(self.lib_path))  # the library copy...
            assert read_genres(path) == ["Rock"]  # ...carries the genre
            formats.add(Path(path).suffix)
        assert formats == {".mp3", ".flac", ".ogg"}
        # write_imported wrote every file: no row is left marked as unwritten.
        assert not [i for i in items if i.get("mmgenre_unwritten", None, with_album=False)]
        assert all(read_genres(s) == [] for s in sources)  # copy mode: the originals are untouched
        album = self.lib.albums().get()
        assert album.genres == ["Rock"] and album["mmgenre_album_model"] == "tiny@1"

    def test_a_read_only_file_stays_marked_until_a_run_can_write_it(self):
        """import.write on, file read-only (as-is, in place): the import finishes, the row
        carries the genre and the unwritten mark, the file is untouched; once writable,
        the next plain `beet mmgenre` writes it and clears the mark."""
        sources = self.prepare_album()
        os.chmod(sources[0], 0o444)
        before = sources[0].read_bytes()
        self.import_asis(copy=False)
        items = {os.fsdecode(i.path): i for i in self.lib.items()}
        locked = items[str(sources[0])]
        assert locked.genres == ["Rock"] and locked.get("mmgenre_unwritten", None, with_album=False)
        assert sources[0].read_bytes() == before
        assert all(read_genres(p) == ["Rock"] for p in sources[1:])
        os.chmod(sources[0], 0o644)
        self.run_command("mmgenre")
        locked.load()
        assert not locked.get("mmgenre_unwritten", None, with_album=False)
        assert read_genres(sources[0]) == ["Rock"]

    def test_a_task_is_classified_in_one_batch(self, monkeypatch):
        self.prepare_album()
        clf = self.mmgenre.classifier
        calls = []
        real = clf.iter_predict
        monkeypatch.setattr(clf, "iter_predict", lambda paths, **kw: calls.append(list(paths)) or real(paths, **kw))
        self.import_asis()
        assert [len(c) for c in calls] == [3]

    def test_import_write_off(self):
        self.config["import"]["write"] = False
        self.prepare_album()
        self.import_asis()
        for item in self.lib.items():
            assert item.genres == ["Rock"]
            assert read_genres(item.path) == []

    def test_singletons(self):
        self.prepare_album()
        self.import_asis(singletons=True)
        items = list(self.lib.items())
        assert len(items) == 3 and all(i.genres == ["Rock"] for i in items)
        assert all(read_genres(i.path) == ["Rock"] for i in items)

    def test_file_genres_are_kept(self):
        paths = self.prepare_album()
        set_tags(paths[0], clear_genre=False, genre="Chanson")
        self.import_asis()
        genres = {Path(os.fsdecode(i.path)).suffix: i.genres for i in self.lib.items()}
        assert genres == {".mp3": ["Chanson"], ".flac": ["Rock"], ".ogg": ["Rock"]}
        chanson = next(i for i in self.lib.items() if i.genres == ["Chanson"])
        assert chanson.get("mmgenre_model", with_album=False) is None and read_genres(chanson.path) == ["Chanson"]

    def test_force_replaces_file_genres(self):
        self.config["mmgenre"]["force"] = True
        paths = self.prepare_album()
        set_tags(paths[0], clear_genre=False, genre="Chanson")
        self.import_asis()
        assert all(i.genres == ["Rock"] for i in self.lib.items())
        assert all(read_genres(i.path) == ["Rock"] for i in self.lib.items())

    @pytest.mark.parametrize("unfamiliar", ["skip", "tag"])
    def test_a_track_unlike_every_known_genre_is_left_untagged(self, unfamiliar, caplog):
        """The shipped model, an FMA Experimental clip its open-set score flags, beside two
        Emotify classical ones: the import leaves the odd one untagged (file and row) and
        says so in the task's summary; ``unfamiliar: tag`` tags it anyway."""
        self.config["mmgenre"]["model"] = None  # the shipped model
        self.config["mmgenre"]["unfamiliar"] = unfamiliar
        odd = DATA_DIR / "fma_sample" / "fma_small" / "001" / "001075.mp3"
        classical = sorted((DATA_DIR / "emotify" / "classical").glob("*.mp3"))[:2]
        self.prepare_album(sources=[odd, *classical])
        with caplog.at_level(logging.INFO, logger="beets"):
            self.import_asis()
        items = {i.title: i for i in self.lib.items()}
        flagged = items["Track 1 of album"]
        assert [items[f"Track {n} of album"].genres for n in (2, 3)] == [["Classical"], ["Classical"]]
        messages = [r.getMessage() for r in caplog.records if r.name == "beets.mmgenre"]
        if unfamiliar == "skip":
            assert flagged.genres == [] and read_genres(flagged.path) == []
            assert flagged.get("mmgenre_model", with_album=False) is None
            assert any("1 skipped (1 left untagged: unlike the genres the model knows)" in m for m in messages)
        else:
            assert flagged.genres != [] and read_genres(flagged.path) == flagged.genres
            assert not any("unlike the genres" in m for m in messages)

    def test_corrupt_file_in_the_middle(self, caplog):
        folder = self.import_path / "album"
        good = [self.media.mp3[0], self.media.mp3[1]]
        self.prepare_album(sources=[good[0]])
        truncated_mp3(self.media.mp3[2], folder / "02 cut short.mp3")
        set_tags(folder / "02 cut short.mp3", title="Cut Short", artist="Import Artist", album="Import Album",
                 tracknumber="2")
        (folder / "03 not audio.mp3").write_bytes(b"ID3" + os.urandom(50_000))  # beets itself skips this one
        copy_file(good[1], folder / "04 last.mp3")
        set_tags(folder / "04 last.mp3", title="Last", artist="Import Artist", album="Import Album",
                 tracknumber="4")

        with caplog.at_level(logging.DEBUG, logger="beets"):
            self.import_asis()

        items = {i.title: i for i in self.lib.items()}
        assert set(items) == {"Track 1 of album", "Cut Short", "Last"}
        assert items["Cut Short"].genres == [] and items["Cut Short"].get("mmgenre_model", with_album=False) is None
        assert items["Track 1 of album"].genres == ["Rock"] and items["Last"].genres == ["Rock"]
        assert read_genres(items["Last"].path) == ["Rock"]
        messages = [r.getMessage() for r in caplog.records if r.name == "beets.mmgenre"]
        assert any("cut short.mp3" in m and "need at least" in m for m in messages)

    @pytest.mark.parametrize("mode", ["error", "timeout"])
    def test_genius_failure_does_not_stop_an_import(self, mode, caplog):
        with GeniusServer() as server:
            server.mode, server.delay = mode, 2.0
            for key, value in genius_config(server, self.genius_cache, genius_timeout=0.3).items():
                self.config["mmgenre"][key] = value
            self.prepare_album()
            with caplog.at_level(logging.WARNING, logger="beets"):
                self.import_asis()
        items = list(self.lib.items())
        assert len(items) == 3 and all(i.genres == ["Rock"] and not i["mmgenre_lyrics"] for i in items)
        assert server.requests  # Genius was asked (and failed)
        assert any("Genius" in r.getMessage() for r in caplog.records)

    def test_genius_lyrics_during_import(self):
        record = lyrics_records(1)[0]
        with GeniusServer() as server:
            server.add_song(record["artist"], record["title"], record["lyrics"])
            for key, value in genius_config(server, self.genius_cache).items():
                self.config["mmgenre"][key] = value
            paths = self.prepare_album(sources=[self.media.mp3[0]])
            set_tags(paths[0], title=record["title"], artist=record["artist"], album="Import Album")
            self.import_asis()
        item = self.lib.items().get()
        assert item.genres == ["Rock"] and item["mmgenre_lyrics"] is True
        assert item.lyrics == ""  # not stored unless store_lyrics

    def test_missing_model_imports_untagged(self, tmp_path, caplog):
        self.config["mmgenre"]["model"] = str(tmp_path / "nope.pt")
        self.prepare_album("a")
        self.prepare_album("b", album="Other Album")
        with caplog.at_level(logging.DEBUG, logger="beets"):
            self.import_asis()
        assert len(list(self.lib.items())) == 6
        assert all(i.genres == [] for i in self.lib.items())
        errors = [r for r in caplog.records if r.name == "beets.mmgenre" and r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "no model file" in errors[0].getMessage()  # reported once, not per album

    def test_auto_off(self):
        self.reload_plugin(auto=False)
        self.prepare_album()
        self.import_asis()
        assert all(i.genres == [] and "mmgenre_model" not in i for i in self.lib.items())


class TestAutotagImport(MMGenrePluginMixin, PluginMixin, AutotagImportHelper):
    """An import that applies (stubbed) MusicBrainz matches: beets writes the files itself."""

    def test_apply_import(self):
        folder = self.import_path / "album"
        for n, src in enumerate([self.media.mp3[0], self.media.flac, self.media.ogg], 1):
            dst = copy_file(src, folder / f"{n:02d} {Path(src).name}")
            set_tags(dst, title=f"Tag Track {n}", artist="Tag Artist", album="Tag Album", tracknumber=str(n))
        self.setup_importer().run()

        items = list(self.lib.items())
        assert len(items) == 3
        assert all(i.title.startswith("Applied Track") for i in items)  # the match was applied
        for item in items:
            assert item.genres == ["Rock"] and item["mmgenre_confidence"] == pytest.approx(0.4, abs=1e-4)
            assert read_genres(item.path) == ["Rock"]
        assert self.lib.albums().get().genres == ["Rock"]


class TestImportFeatureCache(ImportTestBase):
    def test_a_retag_after_import_reads_the_cached_features(self, tmp_path):
        """The import stage classifies the files before beets copies them into the library and
        writes their tags: the features follow the copies, so re-tagging decodes nothing."""
        self.config["mmgenre"]["cache_path"] = str(tmp_path / "features.sqlite3")
        self.prepare_album()
        self.import_asis()
        items = list(self.lib.items())
        assert len(items) == 3 and all(os.fsdecode(i.path).startswith(str(self.lib_path)) for i in items)
        cache = self.mmgenre.classifier.feature_cache
        assert cache.misses == 3
        self.run_command("mmgenre", "-f")
        assert (cache.hits, cache.misses) == (3, 3)
