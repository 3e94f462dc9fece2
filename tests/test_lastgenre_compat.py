"""A lastgenre user feels at home (issue 24): lastgenre's flags with lastgenre's meaning,
lastgenre's vocabulary read from the beets installed, and the messages a new user needs.

lastgenre itself is imported here (it needs pylast, a test dependency) only to compare
its own option parser with mmgenre's; mmgenre never imports it.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from beets.test.helper import IOMixin, PluginTestHelper

from .plugin_helpers import (EMOTIFY, FakeClassifier, MMGenrePluginMixin, io, make_model_file,  # noqa: F401
                             media, models, needs_data)
from .test_hostile_plugin import read_genres

pytestmark = needs_data

FMA_16 = ["Blues", "Classical", "Country", "Easy Listening", "Electronic", "Experimental", "Folk", "Hip-Hop",
          "Instrumental", "International", "Jazz", "Old-Time / Historic", "Pop", "Rock", "Soul-RnB", "Spoken"]


class CompatTest(MMGenrePluginMixin, IOMixin, PluginTestHelper):
    pass


def shipped_whitelist() -> set[str]:
    """beets' own lastgenre whitelist, read from the installed package's file."""
    import importlib.util

    folder = importlib.util.find_spec("beetsplug.lastgenre").submodule_search_locations[0]
    with open(os.path.join(folder, "genres.txt"), encoding="utf-8") as fh:
        return {line.strip().lower() for line in fh if line.strip() and not line.startswith("#")}


# --------------------------------------------------------------------------- 1: the command line


@pytest.mark.parametrize("argv", [
    [], ["-f"], ["--force"], ["-F"], ["--no-force"], ["-k"], ["--keep-existing"], ["-K"], ["--no-keep-existing"],
    ["-A"], ["--items"], ["-a"], ["--albums"], ["-a", "-A"], ["-A", "-a"], ["-f", "-F"], ["-k", "-K", "-k"],
    ["-p"], ["--pretend"], ["-p", "-f", "-k", "-A"],
])
def test_the_shared_options_parse_as_in_lastgenre(argv):
    from beets import config

    config.read(user=False)
    from beetsplug.lastgenre import LastGenrePlugin

    from beetsplug.mmgenre import MMGenrePlugin

    theirs, _ = LastGenrePlugin().commands()[0].parser.parse_args(list(argv))
    ours, _ = MMGenrePlugin().commands()[0].parser.parse_args(list(argv))
    for dest in ("force", "keep_existing", "pretend"):
        assert getattr(ours, dest) == getattr(theirs, dest), dest
    if any(flag in argv for flag in ("-a", "-A", "--albums", "--items")):
        assert ours.album == theirs.album
    else:  # the one default that differs, on purpose: mmgenre hears each track
        assert theirs.album is True and ours.album is None


class TestCommandLine(CompatTest):
    def make_album(self):
        items = [self.add_track(self.media.mp3[0], track=1), self.add_track(self.media.mp3[1], track=2),
                 self.add_track(self.media.mp3[2], track=3, genres=["Jazz"])]
        items[2].try_write()
        return self.lib.add_album(items), items

    def test_F_and_K_undo_the_config(self):
        self.config["mmgenre"].set({"force": True, "keep_existing": True})
        item = self.add_track(self.media.mp3[0], genres=["Jazz"])
        self.run_command("mmgenre", "-F", "-K")
        assert self.lib.get_item(item.id).genres == ["Jazz"]
        # (in one process a command's options stay in the config: set it again, as a new beet would start)
        self.config["mmgenre"].set({"force": True, "keep_existing": True})
        self.run_command("mmgenre", "-K")
        assert self.lib.get_item(item.id).genres == ["Rock"] and read_genres(item.path) == ["Rock"]

    def test_albums_go_down_to_tracks_without_genres(self):
        album, items = self.make_album()
        out = self.run_with_output("mmgenre", "-a")
        album.load()
        assert album.genres == ["Rock"]
        assert [self.lib.get_item(i.id).genres for i in items] == [["Rock"], ["Rock"], ["Jazz"]]
        assert "1 album: 1 tagged" in out and "3 tracks: 2 tagged, 0 unchanged, 1 skipped" in out

    def test_pretend_in_the_config(self):
        self.config["mmgenre"]["pretend"] = True
        item = self.add_track(self.media.mp3[0])
        before = Path(os.fsdecode(item.path)).read_bytes()
        out = self.run_with_output("mmgenre")
        assert "mmgenre (pretend): 1 track: 1 would be tagged" in out and "+ Rock" in out
        assert self.lib.get_item(item.id).genres == [] and Path(os.fsdecode(item.path)).read_bytes() == before

    def test_fallback_when_nothing_is_confident(self):
        self.config["mmgenre"].set({"min_confidence": 0.9, "fallback": "Unknown Genre"})
        item = self.add_track(self.media.mp3[0])
        self.run_command("mmgenre")
        assert self.lib.get_item(item.id).genres == ["Unknown Genre"] == read_genres(item.path)


# --------------------------------------------------------------------------- 2: one vocabulary with lastgenre


class TestVocabulary(CompatTest):
    def test_every_genre_written_is_in_lastgenres_whitelist(self, tmp_path):
        """All 16 FMA genres, each allowed through (count 16, no threshold): what lands in the
        library and the files is lastgenre's names, title-cased as lastgenre writes them."""
        model = make_model_file(tmp_path / "fma16.pt", [1 / 16] * 16, genres=FMA_16, name="fma16")
        self.config["mmgenre"].set({"model": str(model), "vocabulary": "lastgenre", "count": 16,
                                    "min_confidence": 0.0})
        items = [self.add_track(p) for p in self.media.mp3]
        self.run_command("mmgenre")
        allowed = shipped_whitelist()
        written = {g for it in items for g in self.lib.get_item(it.id).genres}
        assert written and {g.lower() for g in written} <= allowed, written - {g for g in written
                                                                               if g.lower() in allowed}
        assert {"Hip Hop", "R&B", "World Music", "Old-Time", "Folk Music"} <= written
        for it in items:
            assert read_genres(it.path) == self.lib.get_item(it.id).genres
        # FMA's forms without a lastgenre genre are not written under another name
        assert not {"Instrumental", "Spoken", "Hip-Hop", "Soul-RnB"} & written

    def test_the_real_model_on_real_clips(self):
        """The shipped model (10 genres), three genres a track: lastgenre's names only."""
        from mmgenre_core.predict import default_model_path

        self.config["mmgenre"].set({"model": str(default_model_path()), "vocabulary": "lastgenre",
                                    "count": 3, "min_confidence": 0.0, "title_case": False})
        items = [self.add_track(p) for p in self.media.mp3]
        self.run_command("mmgenre")
        written = [g for it in items for g in self.lib.get_item(it.id).genres]
        assert len(written) == 12 and set(written) <= shipped_whitelist()  # lower case: title_case no

    def test_whitelist_yes_is_lastgenres_list(self):
        from .plugin_helpers import GENRES

        assert GENRES == ["Classical", "Electronic", "Pop", "Rock"]
        self.config["mmgenre"].set({"whitelist": True, "count": 4, "min_confidence": 0.0})
        item = self.add_track(self.media.mp3[0])
        self.run_command("mmgenre")
        # all four of the tiny model's names are on lastgenre's list (case-insensitively)
        assert self.lib.get_item(item.id).genres == ["Rock", "Pop", "Electronic", "Classical"]
        self.config["mmgenre"]["genre_map"] = {"Rock": "Guitar Noise", "Pop": "Hip-Hop"}
        self.run_command("mmgenre", "-f")
        assert self.lib.get_item(item.id).genres == ["Electronic", "Classical"]  # neither new name is listed


# --------------------------------------------------------------------------- 3: messages


class TestMessages(CompatTest):
    def test_names_the_model_never_answers_are_named(self, caplog):
        self.config["mmgenre"].set({"whitelist": ["Rock", "Folk", "Historic", "Spoken"],
                                    "genre_map": {"Old-Time / Historic": "Historic", "Pop": "Pop"}})
        self.add_track(self.media.mp3[0])
        self.run_command("mmgenre")
        assert "genre_map names Old-Time / Historic, which the model never answers" in caplog.text
        assert "the whitelist names Folk, Historic, Spoken, which the model" in caplog.text

    def test_a_skipped_tracks_confidence_is_not_rounded_up(self, caplog):
        import logging

        caplog.set_level(logging.DEBUG)
        item = self.add_track(self.media.mp3[0])
        name = Path(os.fsdecode(item.path)).stem
        self.mmgenre.__dict__["classifier"] = FakeClassifier(
            {name: {"Classical": 0.2336, "Electronic": 0.2335, "Pop": 0.2335, "Rock": 0.2994}})
        out = self.run_with_output("mmgenre")
        assert "1 skipped (1 below min_confidence)" in out
        assert "Rock (0.299)" in caplog.text and "(0.30)" not in caplog.text

    def test_the_rate_leaves_the_model_load_out(self):
        for p in self.media.mp3:
            self.add_track(p)
        out = self.run_with_output("mmgenre")
        assert "tracks/s; model loaded in" in out

    def test_a_rejected_token_is_in_the_summary(self):
        from .genius_server import GeniusServer
        from .plugin_helpers import genius_config

        with GeniusServer() as server:
            server.unauthorized = True
            for key, value in genius_config(server, self.genius_cache).items():
                self.config["mmgenre"][key] = value
            self.config["mmgenre"]["genius_token"] = "a-wrong-token"
            self.add_track(self.media.mp3[0], artist="Some Artist", title="Some Title").store()
            out = self.run_with_output("mmgenre")
        assert "Genius rejected the access token (HTTP 401); no lyrics came from Genius in this run" in out
        assert "a-wrong-token" not in out


def test_predict_takes_v_after_the_subcommand(data_dir, capsys):
    from mmgenre_core.cli import main

    assert main(["predict", "-v", str(sorted(EMOTIFY.glob("rock/*.mp3"))[0])]) == 0
    assert "Rock" in capsys.readouterr().out


def _hit_end_mp3(dst: Path) -> Path:
    """A real MP3 cut at 90 % with 900 random bytes after: libmpg123 prints "Note: Hit end
    of (available) data during resync." straight to descriptor 2 when it reaches them."""
    data = sorted(EMOTIFY.glob("rock/*.mp3"))[0].read_bytes()
    dst.write_bytes(data[: int(len(data) * 0.9)] + random.Random(0).randbytes(900))
    return dst


def test_resync_notes_stay_off_the_terminal(tmp_path, data_dir):
    mp3 = _hit_end_mp3(tmp_path / "tail.mp3")
    raw = subprocess.run([sys.executable, "-c", "import soundfile as sf, sys; sf.SoundFile(sys.argv[1]).read()",
                          str(mp3)], capture_output=True, text=True, timeout=120)
    assert "Hit end of (available) data during resync" in raw.stderr  # the noise exists unfiltered
    cli = subprocess.run([sys.executable, "-m", "mmgenre_core.cli", "predict", "--no-cache", str(mp3)],
                         capture_output=True, text=True, timeout=300)
    api = subprocess.run([sys.executable, "-c", "import sys; from mmgenre_core.predict import GenreClassifier; "
                          "print(GenreClassifier.load().predict([sys.argv[1]])[0].genres[0].genre)", str(mp3)],
                         capture_output=True, text=True, timeout=300)
    for proc in (cli, api):
        assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr
        assert "Hit end" not in proc.stderr and "resync" not in proc.stderr, proc.stderr
