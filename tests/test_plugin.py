"""``beet mmgenre`` on a real temporary library of real files, with beets' own test helpers.

The models are tiny real checkpoints with known output probabilities (see
plugin_helpers.make_model_file): Rock 0.4, Pop 0.3, Electronic 0.2, Classical 0.1
for the default one. The full decode -> model path runs on every file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest
from beets import ui
from beets.test.helper import IOMixin, PluginTestHelper

from beetsplug.mmgenre import GenreNames

from .plugin_helpers import (ROOT, FakeClassifier, GeniusServer, MMGenrePluginMixin, genius_config, io,  # noqa: F401
                             lyrics_records, media, models, needs_data, read_genres, same_lyrics, set_lyrics,
                             truncated_mp3)

pytestmark = needs_data

FIELDS = ("mmgenre_genre", "mmgenre_confidence", "mmgenre_lyrics", "mmgenre_model", "mmgenre_genres")


class PluginTest(MMGenrePluginMixin, IOMixin, PluginTestHelper):
    pass


def spy_on(plugin, monkeypatch) -> list[dict]:
    """Record the arguments of every GenreClassifier.iter_predict call (the real one still runs)."""
    clf = plugin.classifier
    calls: list[dict] = []
    real = clf.iter_predict

    def wrapper(paths, **kwargs):
        calls.append({"paths": list(paths), **kwargs})
        return real(paths, **kwargs)

    monkeypatch.setattr(clf, "iter_predict", wrapper)
    return calls


def lyrics_passed(calls: list[dict], item) -> str | None:
    path = os.fsdecode(item.path)
    for call in calls:
        if path in call["paths"]:
            texts = call.get("lyrics")
            return None if texts is None else texts[call["paths"].index(path)]
    raise AssertionError(f"{path} was not classified")


class TestCommand(PluginTest):
    def test_tags_tracks_that_have_no_genre(self):
        items = [self.add_track(p) for p in self.media.mp3]
        assert all(item.genres == [] for item in items)

        out = self.run_with_output("mmgenre")

        for item in items:
            item.load()
            assert item.genres == ["Rock"]
            assert item["mmgenre_genre"] == "Rock"
            assert item["mmgenre_confidence"] == pytest.approx(0.4, abs=1e-4)
            assert item["mmgenre_lyrics"] is False
            assert item["mmgenre_model"] == "tiny@1"
            assert GenreNames.split(item["mmgenre_genres"]) == ["Rock"]
            assert read_genres(item.path) == ["Rock"]
        assert "+ Rock" in out
        assert "4 tracks: 4 tagged, 0 unchanged, 0 skipped, 0 failed" in out

    def test_keeps_genres_the_user_has_without_force(self):
        item = self.add_track(self.media.mp3[0], genres=["Jazz"])
        item.store()

        out = self.run_with_output("mmgenre")

        item.load()
        assert item.genres == ["Jazz"]
        assert all(field not in item for field in FIELDS)
        assert "1 skipped (1 have genres already" in out
        assert "classifier" not in vars(self.mmgenre)  # nothing to classify: the model was never loaded

    def test_force_replaces_them(self):
        item = self.add_track(self.media.mp3[0], genres=["Jazz"])
        self.run_command("mmgenre", "--force")
        item.load()
        assert item.genres == ["Rock"] and read_genres(item.path) == ["Rock"]

    def test_keep_existing_merges_them(self):
        self.config["mmgenre"]["keep_existing"] = True
        item = self.add_track(self.media.mp3[0], genres=["Jazz"])
        self.run_command("mmgenre")
        item.load()
        assert item.genres == ["Jazz", "Rock"] and GenreNames.split(item["mmgenre_genres"]) == ["Rock"]
        assert read_genres(item.path) == ["Jazz", "Rock"]

    def test_rerun_replaces_only_what_mmgenre_set(self):
        mine = self.add_track(self.media.mp3[0])
        users = self.add_track(self.media.mp3[1])
        self.run_command("mmgenre")
        # The user corrects one track by hand; a new model version then prefers Pop.
        users.load()
        users.genres = ["Ambient"]
        users.store()
        self.config["mmgenre"]["model"] = str(self.models["pop"])
        del self.mmgenre.__dict__["classifier"]

        self.run_command("mmgenre")

        mine.load()
        users.load()
        assert mine.genres == ["Pop"] and mine["mmgenre_model"] == "tiny@2"
        assert users.genres == ["Ambient"] and users["mmgenre_model"] == "tiny@1"

    def test_rerun_with_the_same_model_is_unchanged(self):
        item = self.add_track(self.media.mp3[0])
        self.run_command("mmgenre")
        item.load()
        mtime = item.mtime
        out = self.run_with_output("mmgenre")
        item.load()
        assert "1 track: 0 tagged, 1 unchanged" in out
        assert item.genres == ["Rock"] and item.mtime == mtime  # the file was not rewritten

    def test_query_selects_tracks(self):
        rock, pop = (self.add_track(p) for p in self.media.mp3[:2])
        self.run_command("mmgenre", f"title:{rock.title}")
        rock.load()
        pop.load()
        assert rock.genres == ["Rock"] and pop.genres == []

    @pytest.mark.parametrize("kind", ["mp3", "flac", "ogg", "ogg_full"])
    def test_genre_is_written_into_every_format(self, kind):
        src = self.media.mp3[0] if kind == "mp3" else getattr(self.media, kind)
        assert src is not None, "no full-length track in the data"
        item = self.add_track(src)
        self.run_command("mmgenre")
        item.load()
        assert item.genres == ["Rock"]
        assert read_genres(item.path) == ["Rock"]

    def test_write_off_changes_only_the_database(self):
        self.config["import"]["write"] = False
        item = self.add_track(self.media.flac)
        before = Path(os.fsdecode(item.path)).read_bytes()
        self.run_command("mmgenre")
        item.load()
        assert item.genres == ["Rock"]
        assert Path(os.fsdecode(item.path)).read_bytes() == before

    @pytest.mark.parametrize(
        "config, genres, status",
        [
            pytest.param({}, ["Rock"], "1 tagged", id="defaults"),
            pytest.param({"count": 2}, ["Rock", "Pop"], "1 tagged", id="count-two"),
            pytest.param({"count": 4, "min_confidence": 0.15}, ["Rock", "Pop", "Electronic"], "1 tagged",
                         id="count-four-threshold-cuts"),
            pytest.param({"min_confidence": 0.5}, [], "1 skipped (1 below min_confidence)", id="too-unsure"),
            pytest.param({"genre_map": {"Rock": "Rock & Roll"}}, ["Rock & Roll"], "1 tagged", id="genre-map"),
            pytest.param({"genre_map": {"Rock": "Guitar Music", "Pop": "Guitar Music"}}, ["Guitar Music"],
                         "1 tagged", id="genre-map-merges"),
            pytest.param({"genre_map": {"Rock": None}}, ["Pop"], "1 tagged", id="genre-map-drops"),
            pytest.param({"whitelist": ["Pop", "Classical"]}, ["Pop"], "1 tagged", id="whitelist"),
            pytest.param({"whitelist": ["Classical"]}, [], "1 skipped (1 below min_confidence)",
                         id="whitelist-and-threshold"),
            pytest.param({"genre_map": {"Pop": "Indie"}, "whitelist": ["indie"]}, ["Indie"], "1 tagged",
                         id="whitelist-of-mapped-names"),
        ],
    )
    def test_genre_rules(self, config, genres, status):
        for key, value in config.items():
            self.config["mmgenre"][key] = value
        item = self.add_track(self.media.ogg)
        out = self.run_with_output("mmgenre")
        item.load()
        assert item.genres == genres
        assert read_genres(item.path) == genres
        assert status in out
        if genres:
            assert item["mmgenre_confidence"] > 0
        else:  # skipped means untouched: no mmgenre field appears either
            assert not [key for key in item.keys(with_album=False) if key.startswith("mmgenre_")]

    def test_whitelist_from_a_file(self, tmp_path):
        path = tmp_path / "genres.txt"
        path.write_text("# my genres\nPop\nJazz\n", encoding="utf-8")
        self.config["mmgenre"]["whitelist"] = str(path)
        item = self.add_track(self.media.mp3[0])
        self.run_command("mmgenre")
        item.load()
        assert item.genres == ["Pop"]

    def test_low_confidence_guesses_are_queryable(self):
        items = [self.add_track(p) for p in self.media.mp3[:2]]
        self.run_command("mmgenre")
        assert {i.id for i in self.lib.items("mmgenre_confidence:..0.5")} == {i.id for i in items}
        assert list(self.lib.items("mmgenre_confidence:0.5..")) == []
        assert len(list(self.lib.items("mmgenre_lyrics:false"))) == 2
        assert len(list(self.lib.items("mmgenre_model:tiny@1"))) == 2
        out = self.run_with_output("ls", "-f", "$title $mmgenre_confidence", "mmgenre_confidence:..0.5")
        assert "0.40" in out

    def test_bad_file_fails_alone(self, caplog):
        good = self.add_track(self.media.mp3[0])
        src = truncated_mp3(self.media.mp3[1], self.temp_path / "broken.mp3")
        bad = self.add_track(src)
        after = self.add_track(self.media.mp3[2])
        missing = self.add_track(self.media.mp3[3])
        os.remove(os.fsdecode(missing.path))

        with caplog.at_level(logging.WARNING, logger="beets"):
            out = self.run_with_output("mmgenre")

        for item in (good, bad, after, missing):
            item.load()
        assert good.genres == ["Rock"] and after.genres == ["Rock"]
        assert bad.genres == [] and "mmgenre_model" not in bad
        assert "1 failed" in out and "1 file not found" in out
        assert any("broken.mp3" in r.getMessage() and "audio" in r.getMessage() for r in caplog.records)

    def test_missing_model_is_a_clear_error(self, tmp_path):
        self.config["mmgenre"]["model"] = str(tmp_path / "nope.pt")
        self.add_track(self.media.mp3[0])
        with pytest.raises(ui.UserError, match="no model file"):
            self.run_command("mmgenre")

    def test_no_shipped_model_is_a_clear_error(self, monkeypatch, tmp_path):
        import mmgenre_core.predict as predict

        monkeypatch.setattr(predict, "default_model_path", lambda: tmp_path / "default.pt")
        self.config["mmgenre"]["model"] = None
        self.add_track(self.media.mp3[0])
        with pytest.raises(ui.UserError, match="no default model"):
            self.run_command("mmgenre")

    @pytest.mark.parametrize("config", [{"count": 0}, {"min_confidence": 2}, {"genre_map": ["Rock"]}])
    def test_invalid_configuration(self, config):
        for key, value in config.items():
            self.config["mmgenre"][key] = value
        self.add_track(self.media.mp3[0])
        with pytest.raises(ui.UserError, match="invalid configuration"):
            self.run_command("mmgenre")

    def test_token_is_redacted_in_beet_config(self):
        from beetsplug.mmgenre import MMGenrePlugin

        self.config["mmgenre"]["genius_token"] = "secret-token-123"
        MMGenrePlugin()  # as beets does: the user's config is read before the plugin starts
        out = self.run_with_output("config")
        assert "secret-token-123" not in out
        assert "genius_token: REDACTED" in out

    def test_no_token_is_not_shown_as_redacted(self):
        out = self.run_with_output("config")
        assert "genius_token: REDACTED" not in out and "genius_token:" in out


class TestShippedModel(PluginTest):
    """No ``model:`` configured: the default model shipped in the package (the
    pretrained musicnn audio branch) tags real files and writes the tags."""

    def test_shipped_model_tags_real_clips_and_a_full_track(self):
        from mmgenre_core.checkpoint import load_checkpoint
        from mmgenre_core.predict import default_model_path

        shipped = load_checkpoint(default_model_path())
        assert shipped.model_config.audio_branch == "musicnn"
        self.config["mmgenre"]["model"] = None
        clips = [self.add_track(p) for p in self.media.mp3]
        full = self.add_track(self.media.ogg_full)  # Death Metal, tagged so by its artist

        self.run_command("mmgenre")

        for item in [*clips, full]:
            item.load()
            assert item.genres and set(item.genres) <= set(shipped.genres), item.genres
            assert item["mmgenre_model"] == shipped.model_id
            assert read_genres(item.path) == item.genres  # written to the file, read back with mutagen
        # Emotify's classical/001.mp3 is in the default model's held-out test split.
        assert clips[0].genres == ["Classical"]
        assert full.genres == ["Rock"]


class TestPretend(PluginTest):
    db_on_disk: ClassVar[bool] = True

    @staticmethod
    def digest(paths):
        return {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}

    def test_pretend_shows_changes_and_writes_nothing(self):
        items = [self.add_track(self.media.mp3[0]), self.add_track(self.media.flac),
                 self.add_track(self.media.ogg, genres=["Jazz"])]
        files = [os.fsdecode(i.path) for i in items] + [os.fsdecode(self.lib.path)]
        before = self.digest(files)

        out = self.run_with_output("mmgenre", "--pretend", "--force")

        assert self.digest(files) == before
        assert "- Jazz" in out and "+ Rock" in out
        assert "mmgenre (pretend): 3 tracks: 3 would be tagged" in out
        for item in items:
            item.load()
            assert "mmgenre_model" not in item

    def test_pretend_album_mode(self):
        items = [self.add_track(p) for p in self.media.mp3[:2]]
        self.lib.add_album(items)
        files = [os.fsdecode(i.path) for i in items] + [os.fsdecode(self.lib.path)]
        before = self.digest(files)
        out = self.run_with_output("mmgenre", "-p", "-a")
        assert self.digest(files) == before
        assert "1 album: 1 would be tagged" in out


class TestLyrics(PluginTest):
    @pytest.fixture
    def records(self):
        return lyrics_records(3)

    @pytest.fixture
    def server(self, records):
        with GeniusServer() as srv:
            yield srv

    def configure_genius(self, server, **extra):
        for key, value in genius_config(server, self.genius_cache, **extra).items():
            self.config["mmgenre"][key] = value

    def test_source_order_library_file_genius(self, server, records, monkeypatch):
        self.configure_genius(server)
        lib_and_file = self.add_track(self.media.mp3[0], lyrics=records[0]["lyrics"])
        set_lyrics(lib_and_file.path, records[1]["lyrics"])
        file_only = self.add_track(self.media.mp3[1])
        set_lyrics(file_only.path, records[1]["lyrics"])
        genius_only = self.add_track(self.media.mp3[2], artist=records[2]["artist"], title=records[2]["title"])
        server.add_song(records[2]["artist"], records[2]["title"], records[2]["lyrics"])
        nowhere = self.add_track(self.media.mp3[3], artist="Nobody Known", title="No Such Song")
        for item in (lib_and_file, file_only, genius_only, nowhere):
            item.store()
        calls = spy_on(self.mmgenre, monkeypatch)

        self.run_command("mmgenre")

        assert same_lyrics(lyrics_passed(calls, lib_and_file), records[0]["lyrics"])  # library first
        assert same_lyrics(lyrics_passed(calls, file_only), records[1]["lyrics"])  # then the file's tags
        assert same_lyrics(lyrics_passed(calls, genius_only), records[2]["lyrics"])  # then Genius
        assert lyrics_passed(calls, nowhere) is None
        flags = {}
        for item in (lib_and_file, file_only, genius_only, nowhere):
            item.load()
            flags[item.id] = item["mmgenre_lyrics"]
        assert list(flags.values()) == [True, True, True, False]
        # Genius was asked only for the tracks without local lyrics.
        queries = " ".join(q for _, q, _ in server.search_requests)
        assert len(server.search_requests) == 2 and "Nobody" in queries
        # Fetched lyrics are not stored by default.
        assert genius_only.lyrics == ""

    def test_store_lyrics_option(self, server, records):
        self.configure_genius(server, store_lyrics=True)
        item = self.add_track(self.media.flac, artist=records[0]["artist"], title=records[0]["title"])
        server.add_song(records[0]["artist"], records[0]["title"], records[0]["lyrics"])
        self.run_command("mmgenre")
        item.load()
        assert same_lyrics(item.lyrics, records[0]["lyrics"]) and item["mmgenre_lyrics"] is True
        from mmgenre_core.tags import read_embedded_lyrics

        assert same_lyrics(read_embedded_lyrics(os.fsdecode(item.path)), records[0]["lyrics"])

    def test_file_lyrics_without_genius_come_from_the_chain(self, records, monkeypatch):
        # The plugin's lyrics chain reads the file's tags; the classifier is handed text only.
        item = self.add_track(self.media.ogg)
        set_lyrics(item.path, records[0]["lyrics"])
        calls = spy_on(self.mmgenre, monkeypatch)
        self.run_command("mmgenre")
        item.load()
        assert same_lyrics(lyrics_passed(calls, item), records[0]["lyrics"])
        assert set(calls[0]) == {"paths", "lyrics", "use_lyrics", "batch_size", "top_k", "listen"}
        assert item["mmgenre_lyrics"] is True

    @pytest.mark.parametrize("how", ["option", "config"])
    def test_no_lyrics(self, server, records, monkeypatch, how):
        self.configure_genius(server)
        item = self.add_track(self.media.mp3[0], lyrics=records[0]["lyrics"])
        item.store()
        calls = spy_on(self.mmgenre, monkeypatch)
        if how == "option":
            self.run_command("mmgenre", "--no-lyrics")
        else:
            self.config["mmgenre"]["lyrics"] = False
            self.run_command("mmgenre")
        item.load()
        assert calls[0]["use_lyrics"] is False and calls[0]["lyrics"] is None
        assert item["mmgenre_lyrics"] is False and item.genres == ["Rock"]
        assert server.requests == []

    def test_audio_only_model_asks_no_one(self, server):
        self.configure_genius(server)
        self.config["mmgenre"]["model"] = str(self.models["audio_only"])
        item = self.add_track(self.media.mp3[0], artist="Someone", title="Something")
        self.run_command("mmgenre")
        item.load()
        assert item.genres == ["Rock"] and item["mmgenre_lyrics"] is False and item["mmgenre_model"] == "audio@1"
        assert server.requests == []

    @pytest.mark.parametrize("mode", ["timeout", "error"])
    def test_genius_failures_are_not_fatal(self, server, records, mode, caplog):
        server.mode, server.delay = mode, 2.0
        self.configure_genius(server, genius_timeout=0.3)
        items = [self.add_track(p, artist=records[i]["artist"], title=records[i]["title"])
                 for i, p in enumerate(self.media.mp3[:3])]
        for item in items:
            item.store()
        with caplog.at_level(logging.WARNING, logger="beets"):
            out = self.run_with_output("mmgenre")
        for item in items:
            item.load()
            assert item.genres == ["Rock"] and item["mmgenre_lyrics"] is False
        assert "3 tagged" in out
        expected = "timed out" if mode == "timeout" else "HTTP 500"
        assert any(expected in r.getMessage() for r in caplog.records)

    def test_genius_cache_spares_a_rerun(self, server, records):
        self.configure_genius(server)
        item = self.add_track(self.media.mp3[0], artist=records[0]["artist"], title=records[0]["title"])
        item.store()
        server.add_song(records[0]["artist"], records[0]["title"], records[0]["lyrics"])
        self.run_command("mmgenre")
        asked = len(server.requests)
        assert asked >= 2  # search + song page
        plugin = self.reload_plugin()  # a new run: a new client, the same cache folder
        self.run_command("mmgenre", "-f")
        assert len(server.requests) == asked
        item.load()
        assert item["mmgenre_lyrics"] is True and plugin.genius.requests == 0


class TestAlbumMode(PluginTest):
    def make_album(self, genres_of_third=None):
        items = [self.add_track(self.media.mp3[0], track=1), self.add_track(self.media.mp3[1], track=2),
                 self.add_track(self.media.mp3[2], track=3, genres=genres_of_third or [])]
        items[2].try_write()
        return self.lib.add_album(items), items

    def test_album_genres_from_tracks_without_overwriting_them(self):
        album, items = self.make_album(genres_of_third=["Jazz"])

        out = self.run_with_output("mmgenre", "-a")

        album.load()
        assert album.genres == ["Rock"]
        assert album["mmgenre_album_genre"] == "Rock"
        assert album["mmgenre_album_confidence"] == pytest.approx(0.4, abs=1e-4)
        assert album["mmgenre_album_model"] == "tiny@1"
        first, second, jazz = (self.lib.get_item(i.id) for i in items)
        assert first.genres == ["Rock"] and second.genres == ["Rock"]
        assert jazz.genres == ["Jazz"]  # the user's genre survives the album's
        assert jazz.get("mmgenre_model", with_album=False) is None
        assert read_genres(jazz.path) == ["Jazz"] and read_genres(first.path) == ["Rock"]
        assert "1 album: 1 tagged" in out and "3 tracks: 2 tagged, 0 unchanged, 1 skipped" in out

    def test_album_genre_is_the_mean_of_its_tracks(self):
        album, items = self.make_album()
        names = [Path(os.fsdecode(i.path)).stem for i in items]
        fake = FakeClassifier({
            names[0]: {"Classical": 0.0, "Electronic": 0.0, "Pop": 0.55, "Rock": 0.45},
            names[1]: {"Classical": 0.0, "Electronic": 0.0, "Pop": 0.55, "Rock": 0.45},
            names[2]: {"Classical": 0.0, "Electronic": 0.0, "Pop": 0.0, "Rock": 1.0},
        })
        self.mmgenre.__dict__["classifier"] = fake

        self.run_command("mmgenre", "--album")

        album.load()
        assert album.genres == ["Rock"]  # mean: Rock 0.63 > Pop 0.37, though two tracks of three say Pop
        assert album["mmgenre_album_confidence"] == pytest.approx(1.9 / 3, abs=1e-3)
        # lastgenre's -a: the album's genre goes down to its tracks
        assert [self.lib.get_item(i.id).genres for i in items] == [["Rock"], ["Rock"], ["Rock"]]
        assert self.lib.get_item(items[0].id)["mmgenre_confidence"] == pytest.approx(1.9 / 3, abs=1e-3)
        assert len(fake.calls) == 1 and len(fake.calls[0]["paths"]) == 3  # one batched call

    def test_force_writes_the_album_genre_down_to_every_track(self):
        album, items = self.make_album(genres_of_third=["Jazz"])
        self.run_command("mmgenre", "-a", "-f")
        assert [self.lib.get_item(i.id).genres for i in items] == [["Rock"]] * 3
        assert read_genres(items[2].path) == ["Rock"]

    def test_items_is_the_default_and_leaves_albums_alone(self):
        album, items = self.make_album()
        names = [Path(os.fsdecode(i.path)).stem for i in items]
        self.mmgenre.__dict__["classifier"] = FakeClassifier({
            names[0]: {"Classical": 0.0, "Electronic": 0.0, "Pop": 0.55, "Rock": 0.45},
            names[1]: {"Classical": 0.0, "Electronic": 0.0, "Pop": 0.0, "Rock": 1.0},
            names[2]: {"Classical": 0.9, "Electronic": 0.0, "Pop": 0.0, "Rock": 0.1},
        })
        for flags in ([], ["-A"], ["--items"]):
            self.run_command("mmgenre", "-f", *flags)
            album.load()
            assert album.genres == [] and "mmgenre_album_model" not in album
            assert [self.lib.get_item(i.id).genres for i in items] == [["Pop"], ["Rock"], ["Classical"]]

    def test_user_album_genre_kept_tracks_still_tagged(self):
        album, items = self.make_album()
        album.genres = ["Soundtrack"]
        album.store(inherit=False)
        self.run_command("mmgenre", "-a")
        album.load()
        assert album.genres == ["Soundtrack"] and "mmgenre_album_model" not in album
        assert [self.lib.get_item(i.id).genres for i in items] == [["Rock"]] * 3

    def test_album_with_only_broken_tracks_fails_alone(self):
        src = truncated_mp3(self.media.mp3[0], self.temp_path / "broken.mp3")
        bad_album = self.lib.add_album([self.add_track(src)])
        good_album, _ = self.make_album()
        out = self.run_with_output("mmgenre", "-a")
        bad_album.load()
        good_album.load()
        assert bad_album.genres == [] and good_album.genres == ["Rock"]
        assert "2 albums: 1 tagged, 0 unchanged, 0 skipped, 1 failed" in out


def test_enabling_the_plugin_imports_no_torch(tmp_path):
    """beet version / beet ls with the plugin enabled: no torch, no model, no lyricsgenius."""
    (tmp_path / "config.yaml").write_text(
        f"plugins: [mmgenre]\nlibrary: {tmp_path / 'lib.db'}\ndirectory: {tmp_path / 'music'}\n", encoding="utf-8")
    code = (
        "import sys\n"
        "from beets import ui\n"
        "for cmd in (['version'], ['ls'], ['ls', 'mmgenre_confidence:..0.5']):\n"
        "    ui._raw_main(cmd)\n"
        "heavy = sorted(m for m in ('torch', 'librosa', 'lyricsgenius', 'mmgenre_core.predict') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    env = {**os.environ, "BEETSDIR": str(tmp_path), "HOME": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(tmp_path),
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "plugins: mmgenre" in out.stdout
    assert "HEAVY []" in out.stdout
    assert "error loading plugin" not in out.stderr


def test_summary_lines():
    from beetsplug.mmgenre import Summary

    summary = Summary("track")
    for status, reason in [("tagged", None), ("tagged", None), ("unchanged", None), ("skipped", "file not found"),
                           ("skipped", "below min_confidence"), ("skipped", "below min_confidence"),
                           ("failed", "could not be decoded")]:
        summary.add(status, reason)
    assert summary.describe() == ("7 tracks: 2 tagged, 1 unchanged, 3 skipped (2 below min_confidence, "
                                  "1 file not found), 1 failed")
    assert summary.describe(pretend=True).startswith("7 tracks: 2 would be tagged")
    assert Summary("album").describe() == "0 albums: 0 tagged, 0 unchanged, 0 skipped, 0 failed"


def test_progress_without_a_terminal_logs_counts_and_rate():
    from beetsplug.mmgenre import Progress

    lines = []

    class Log:
        def info(self, fmt, *args):
            lines.append(fmt.format(*args))

    progress = Progress(3, Log(), interval=0.0)
    assert progress.bar is None  # pytest's stderr is not a terminal
    for _ in range(3):
        progress.update()
    progress.close()
    assert lines[0].startswith("1/3 tracks, ") and lines[0].endswith(" tracks/s") and len(lines) == 2


class TestFeatureCache(PluginTest):
    """`beet mmgenre` keeps the audio features: a rerun with other rules decodes nothing."""

    def _cache_rows(self) -> int:
        import sqlite3

        with sqlite3.connect(self.config["mmgenre"]["cache_path"].as_filename()) as db:
            return db.execute("SELECT count(*) FROM features").fetchone()[0]

    @pytest.fixture(autouse=True)
    def _private_cache(self, tmp_path):
        self.config["mmgenre"]["cache_path"] = str(tmp_path / "features.sqlite3")

    def test_a_rerun_with_other_rules_reads_the_features(self, monkeypatch):
        items = [self.add_track(p) for p in self.media.mp3]
        self.run_with_output("mmgenre")  # writes the genre into every file: new mtimes
        assert self._cache_rows() == len(items)
        cache = self.mmgenre.classifier.feature_cache
        assert (cache.hits, cache.misses) == (0, len(items))
        from mmgenre_core import predict

        def no_decoding(*args, **kwargs):
            raise AssertionError("decoded a file whose features are cached")

        monkeypatch.setattr(predict, "load_windows", no_decoding)
        out = self.run_with_output("mmgenre", "-f", "--no-keep-existing")
        assert cache.hits == len(items)
        assert f"{len(items)} tracks:" in out
        for item in items:
            item.load()
            assert item.genres == ["Rock"]

    def test_beets_writes_and_moves_keep_the_features(self):
        item = self.add_track(self.media.mp3[0])
        self.run_with_output("mmgenre")
        cache = self.mmgenre.classifier.feature_cache
        item.load()
        item["title"] = "a new title"
        item.store()
        item.try_write()  # beets rewrites the tags: the audio is the same
        from beets.util import MoveOperation

        item.move(operation=MoveOperation.COPY)
        item.store()
        assert self._cache_rows() == 2  # the old path and the library copy
        self.run_with_output("mmgenre", "-f")
        assert (cache.hits, cache.misses) == (1, 1)

    def test_no_cache_stores_nothing(self):
        [self.add_track(p) for p in self.media.mp3[:2]]
        self.run_with_output("mmgenre", "--no-cache")
        assert not Path(self.config["mmgenre"]["cache_path"].as_filename()).exists()
