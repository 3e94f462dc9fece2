"""``beet mmgenre --learn`` on a real library built from ../shared/data.

The big test is the issue's scenario: import the Emotify, GTZAN and FMA clips, keep
genres on a random 60% in a vocabulary other than FMA's (GTZAN's lower-case names,
"metal" apart from "rock"), learn, then tag the other 40% with the learnt model and
with the shipped model mapped through ``genre_map``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from beets.test.helper import IOMixin, PluginTestHelper

from benchmarks.bench_learn import labelled_clips
from mmgenre_core.checkpoint import load_checkpoint
from mmgenre_core.predict import default_model_path

from .plugin_helpers import DATA_DIR, MMGenrePluginMixin, io, media, models, needs_data  # noqa: F401

pytestmark = needs_data

#: The shipped model's genres in the library's words (what a user would configure).
GENRE_MAP = {"Blues": "blues", "Classical": "classical", "Country": "country", "Electronic": "electronic",
             "Hip-Hop": "hiphop", "Jazz": "jazz", "Pop": "pop", "Rock": "rock", "Soul-RnB": "soul-rnb",
             "International": "international"}


class LearnTest(MMGenrePluginMixin, IOMixin, PluginTestHelper):
    @pytest.fixture(autouse=True)
    def _learn_setup(self, _mmgenre_setup, tmp_path):
        self.config["mmgenre"]["model"] = str(default_model_path())  # the shipped model is the base
        self.config["mmgenre"]["cache_path"] = str(tmp_path / "features.sqlite3")
        self.config["import"]["write"] = False  # the test compares library rows only

    def add_real(self, src: Path, name: str, *, genres: list[str], artist: str, **fields):
        return self.add_track(src, name, genres=genres, artist=artist, **fields)

    def library_state(self) -> list[list]:
        """Every row of the library's tables (its own connection: the test library lives in memory)."""
        with self.lib.transaction() as tx:
            return [[tuple(r) for r in tx.query(f"SELECT * FROM {table} ORDER BY id")]
                    for table in ("items", "item_attributes", "albums", "album_attributes")]


class TestLearnOnARealLibrary(LearnTest):
    def test_learnt_genres_beat_the_default_model_on_the_untagged_tracks(self):
        rows = labelled_clips(DATA_DIR)
        assert len(rows) == 482
        rng = np.random.default_rng(0)
        tagged = rng.random(len(rows)) < 0.6
        truth, source = {}, {}
        for i, ((src, genre, artist), keep) in enumerate(zip(rows, tagged)):
            item = self.add_real(src, f"{i:04d}{src.suffix}", genres=[genre] if keep else [], artist=artist,
                                 heldout="yes" if not keep else "no")
            truth[item.id], source[item.id] = genre, os.path.realpath(src)
        files = {p: p.stat().st_mtime_ns for p in (Path(self.lib_path) / "tracks").iterdir()}
        before = self.library_state()

        # A user with their own words maps the shipped model's genres onto them.
        self.config["mmgenre"]["genre_map"] = GENRE_MAP
        out = self.run_with_output("mmgenre", "--learn", "--min-tracks", "3")

        # Learning changed nothing in the library or the files.
        assert self.library_state() == before
        assert {p: p.stat().st_mtime_ns for p in files} == files
        assert "learnt 11 genres from" in out and "metal: " in out and "disco (1)" in out
        saved = Path(self.config.config_dir()) / "mmgenre-learnt.pt"
        assert f"saved {saved}" in out and "model: " in out
        ckpt = load_checkpoint(saved)
        assert set(ckpt.genres) >= {"metal", "rock", "blues", "jazz", "classical", "reggae"}
        assert ckpt.metadata["base_model"] == load_checkpoint(default_model_path()).model_id
        assert "learnt 11 genres" in ckpt.metadata["model_card"]
        # It listens as its base does (without the plans it would hear every window of every track).
        assert ckpt.metadata["listening"] == load_checkpoint(default_model_path()).metadata["listening"]

        # The shipped model trained on every one of these clips (0.5 holds nothing out), which
        # flatters it on them: the learnt head heard only the tagged 60%.
        def heldout_accuracy() -> tuple[float, float, int]:
            """Top genre right: over the held-out tracks, and over those of genres the shipped
            model has no word for (metal, disco, reggae ...), and how many those are."""
            items = list(self.lib.items("heldout:yes"))
            assert len(items) == len(rows) - tagged.sum()
            right = {it.id: list(it.genres)[:1] == [truth[it.id]] for it in items}
            new_words = [right[it.id] for it in items if truth[it.id] not in GENRE_MAP.values()]
            return float(np.mean(list(right.values()))), float(np.mean(new_words)), len(new_words)

        # The other 40% with the learnt model (features from the cache: nothing is decoded)...
        self.config["mmgenre"]["model"] = str(saved)
        self.config["mmgenre"]["min_confidence"] = 0.0
        self.mmgenre.__dict__.pop("classifier", None)
        self.run_with_output("mmgenre", "heldout:yes")
        learnt = heldout_accuracy()
        # ... and with the shipped model through genre_map, as a user would have configured it.
        self.config["mmgenre"]["model"] = str(default_model_path())
        self.config["mmgenre"]["genre_map"] = GENRE_MAP
        self.mmgenre.__dict__.pop("classifier", None)
        self.run_with_output("mmgenre", "-f", "heldout:yes")
        default = heldout_accuracy()
        print(f"held-out 40%: learnt {learnt[0]:.3f}, default through genre_map {default[0]:.3f}; on the "
              f"{learnt[2]} of genres only the learnt model has: {learnt[1]:.3f} against {default[1]:.3f}")
        # Measured 2026-12-05 (default model 0.5.0): learnt 0.848, default 0.881 (which trained on
        # these clips); on the 11 tracks of metal, disco and reggae: 0.455 (5 right) against 0.
        assert learnt[0] >= 0.78
        assert learnt[0] >= default[0] - 0.07  # within reach of a model that heard the answers
        assert learnt[2] >= 10 and default[1] == 0.0
        assert learnt[1] >= 0.3


class TestLearnGuardRails(LearnTest):
    def _tracks(self, genres_per_track: list[list[str]], **fields):
        srcs = sorted((DATA_DIR / "emotify" / "rock").glob("*.mp3"))
        return [self.add_real(srcs[i], f"{i:03d}.mp3", genres=g, artist=f"artist {i % 3}", **fields)
                for i, g in enumerate(genres_per_track)]

    def test_a_single_genre_gives_a_clear_message_and_no_model(self):
        from beets import ui

        self._tracks([["rock"]] * 6 + [["jazz"]] * 2)
        with pytest.raises(ui.UserError, match="at least two genres with 5 or more"):
            self.run_with_output("mmgenre", "--learn")
        assert not (Path(self.config.config_dir()) / "mmgenre-learnt.pt").exists()

    def test_no_tagged_track(self):
        from beets import ui

        self._tracks([[]] * 3)
        with pytest.raises(ui.UserError, match="no track matching the query has genres"):
            self.run_with_output("mmgenre", "--learn")

    def test_pretend_reports_and_saves_nothing(self):
        self._tracks([["rock"]] * 3 + [["doom"]] * 3)
        before = self.library_state()
        out = self.run_with_output("mmgenre", "--learn", "--pretend", "--min-tracks", "3")
        assert "learnt 2 genres from 6 tracks" in out and "nothing saved" in out
        assert not (Path(self.config.config_dir()) / "mmgenre-learnt.pt").exists()
        assert self.library_state() == before

    def test_genres_mmgenre_wrote_do_not_count_and_album_genres_do(self):
        items = self._tracks([["rock"]] * 3 + [["Rock"]] * 2 + [[]] * 3)
        for item in items[3:5]:  # written by mmgenre itself
            item["mmgenre_genres"] = ["Rock"]
            item.store()
        album = self.lib.add_album(items[5:])
        album.genres = ["shoegaze"]
        album.store(inherit=False)
        out = self.run_with_output("mmgenre", "--learn", "--pretend", "--min-tracks", "3")
        assert "learnt 2 genres from 6 tracks" in out
        assert "rock: 3 tracks" in out and "shoegaze: 3 tracks" in out

    def test_an_unwritable_learn_path_is_a_clear_error(self, tmp_path):
        from beets import ui

        self._tracks([["rock"]] * 3 + [["doom"]] * 3)
        blocker = tmp_path / "a-file"
        blocker.write_text("not a folder")
        self.config["mmgenre"]["learn_path"] = str(blocker / "model.pt")
        with pytest.raises(ui.UserError, match="cannot save the model to .*learn_path"):
            self.run_with_output("mmgenre", "--learn", "--min-tracks", "3")
