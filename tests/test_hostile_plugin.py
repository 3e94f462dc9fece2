"""The plugin against hostile input and faults, end to end on real files.

For every case of the corpus (tests/hostile_corpus.py) one ``beet mmgenre`` run over
the whole library must: name the problem, go on with the other tracks, change no file
and no library row it does not report as tagged, change nothing but the genre tag of
the files it tags (every other tag compared before and after), and leave a library
that passes ``pragma integrity_check``. ``--pretend`` must leave files and database
byte-identical. Process-level faults (SIGINT, SIGKILL, two runs at once) run ``beet``
in a subprocess on a real library.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from beets import ui
from beets.test.helper import IOMixin, PluginTestHelper

from .hostile_corpus import EITHER, FAILED, SKIPPED, TAGGED, Case, build_corpus
from .plugin_helpers import (EMOTIFY, GeniusServer, MMGenrePluginMixin, copy_file, genius_config, io,  # noqa: F401
                             media, models, needs_data, set_tags)


def read_genres(path: Path | str) -> list[str]:
    """The genres in a file, read with mediafile (any format beets writes, WAV included)."""
    from beetsplug.mmgenre.filewrite import read_genres as read

    return read(path) or []

pytestmark = needs_data

GENRE_KEYS = {"genre", "genres", "tcon", "\xa9gen"}


def file_state(path: Path) -> tuple[str, int] | None:
    """(sha1, mtime) of a file's bytes, or None when it cannot be read (gone, a loop)."""
    try:
        return hashlib.sha1(path.read_bytes()).hexdigest(), os.stat(path).st_mtime_ns
    except OSError:
        return None


def tags_except_genre(path: Path) -> dict[str, Any]:
    """Every tag of the file but the genre: mediafile's fields (values as read, pictures
    included) and the raw keys of non-ID3 formats."""
    import mutagen
    from mediafile import MediaFile

    media_file = MediaFile(os.fsdecode(path))
    fields = {name: getattr(media_file, name) for name in sorted(MediaFile.readable_fields())
              if name not in ("genre", "genres")}
    fields["images"] = [(img.mime_type, hashlib.sha1(img.data).hexdigest()) for img in media_file.images or []]
    raw = mutagen.File(os.fsdecode(path))
    if raw is not None and raw.tags is not None and not hasattr(raw.tags, "getall"):  # Vorbis, MP4
        fields["raw"] = {str(k): str(v) for k, v in raw.tags.items() if str(k).lower() not in GENRE_KEYS}
    return fields


def row(item) -> dict[str, Any]:
    item.load()
    return {k: item.get(k, with_album=False) for k in item.keys(computed=False, with_album=False)}


class HostileTest(MMGenrePluginMixin, IOMixin, PluginTestHelper):
    def corpus_library(self, tmp_path: Path) -> list[tuple[Case, Any]]:
        from beets.library import Item

        cases = build_corpus(tmp_path / "corpus", self.media.mp3, self.media.flac)
        added = []
        for case in cases:
            item = Item.from_path(str(case.path))
            item.add(self.lib)
            if case.after_import is not None:
                case.after_import(case.path)
            added.append((case, item))
        return added

    def integrity(self) -> str:
        with self.lib.transaction() as tx:
            return tx.query("pragma integrity_check")[0][0]


class TestCorpus(HostileTest):
    def test_every_case_is_reported_and_nothing_unreported_changes(self, tmp_path, caplog):
        library = self.corpus_library(tmp_path)
        files_before = {case.name: file_state(case.path) for case, _ in library}
        tags_before = {case.name: tags_except_genre(case.path) for case, _ in library
                       if case.outcome in (TAGGED, EITHER) and file_state(case.path)}
        rows_before = {case.name: row(item) for case, item in library}

        started = time.perf_counter()
        with caplog.at_level("INFO", logger="beets"):
            with pytest.raises(ui.UserError, match="2 file\\(s\\) could not be written"):
                self.run_command("mmgenre")
        out = self.io.getoutput()
        elapsed = time.perf_counter() - started
        log = "\n".join(r.getMessage() for r in caplog.records)
        assert elapsed < 120, f"the corpus took {elapsed:.0f} s"

        outcomes = {}
        for case, item in library:
            after = row(item)
            if after.get("mmgenre_model"):
                outcomes[case.name] = TAGGED
                assert after["genres"] == ["Rock"] and read_genres(case.path) == ["Rock"], case.name
                # Only the genre tag changed: every other tag as before.
                assert tags_except_genre(case.path) == tags_before[case.name], case.name
                changed = {k for k in after if after[k] != rows_before[case.name].get(k)}
                assert changed <= {"genres", "mtime", "mmgenre_genre", "mmgenre_confidence", "mmgenre_lyrics",
                                   "mmgenre_model", "mmgenre_genres"}, (case.name, changed)
            else:
                outcomes[case.name] = FAILED if case.outcome in (FAILED, EITHER) else SKIPPED
                assert after == rows_before[case.name], case.name  # the row is untouched...
                assert file_state(case.path) == files_before[case.name], case.name  # ...and so is the file
            if case.message:  # the problem is named (skips in the summary, failures in a warning)
                assert case.message in log or case.message in out, (case.name, case.message)
        expected = {case.name: case.outcome for case, _ in library if case.outcome != EITHER}
        assert {k: v for k, v in outcomes.items() if k in expected} == expected
        assert "Traceback" not in log
        assert self.integrity() == "ok"

    def test_pretend_is_byte_identical(self, tmp_path):
        library = self.corpus_library(tmp_path)
        files_before = {case.name: file_state(case.path) for case, _ in library}
        db_before = "\n".join(self.lib._connection().iterdump())

        out = self.run_with_output("mmgenre", "--pretend", "-f")

        assert "would be tagged" in out
        assert {case.name: file_state(case.path) for case, _ in library} == files_before
        assert "\n".join(self.lib._connection().iterdump()) == db_before

    def test_a_failed_write_is_retried_by_the_next_run(self, tmp_path):
        """The read-only file fails; once writable again, a plain rerun tags it."""
        library = self.corpus_library(tmp_path)
        read_only = next((c, i) for c, i in library if c.name == "read-only")
        with pytest.raises(ui.UserError):
            self.run_command("mmgenre")
        assert row(read_only[1])["genres"] == [] and read_genres(read_only[0].path) == []
        os.chmod(read_only[0].path, 0o644)
        with pytest.raises(ui.UserError, match="1 file"):  # the streaming WAV still cannot be written
            self.run_command("mmgenre")
        assert row(read_only[1])["genres"] == ["Rock"] and read_genres(read_only[0].path) == ["Rock"]


class TestRegressions(HostileTest):
    """Each of these failed on the plugin before the data-safety work (issue 10)."""

    @pytest.mark.parametrize("kind", ["ogg", "mp3"])
    def test_lyrics_another_tool_embedded_survive_a_genre_write(self, kind):
        import mutagen
        from mutagen.id3 import ID3, USLT

        item = self.add_track(self.media.ogg if kind == "ogg" else self.media.mp3[0])
        path = os.fsdecode(item.path)
        if kind == "ogg":  # added after import: the library does not know them
            audio = mutagen.File(path)
            audio["LYRICS"] = "first sung line\nsecond sung line"
            audio.save()
        else:
            tags = ID3(path)
            tags.add(USLT(encoding=3, lang="eng", desc="", text="first sung line\nsecond sung line"))
            tags.save()
        before = tags_except_genre(Path(path))
        self.run_command("mmgenre", "--no-lyrics")
        assert read_genres(path) == ["Rock"]
        assert tags_except_genre(Path(path)) == before
        if kind == "mp3":
            assert [f.text for f in ID3(path).getall("USLT")] == ["first sung line\nsecond sung line"]

    @pytest.mark.parametrize("config", [{"min_confidence": 0.9}, {"whitelist": ["Jazz"]}],
                             ids=["below-min-confidence", "not-whitelisted"])
    def test_a_skipped_track_is_left_as_it_was(self, config):
        item = self.add_track(self.media.mp3[0])
        self.run_command("mmgenre")  # tagged Rock first
        before, file_before = row(item), file_state(Path(os.fsdecode(item.path)))
        for key, value in config.items():
            self.config["mmgenre"][key] = value
        out = self.run_with_output("mmgenre")
        assert "1 skipped" in out
        assert row(item) == before and file_state(Path(os.fsdecode(item.path))) == file_before

    def test_missing_whitelist_file_is_an_error(self, tmp_path):
        self.config["mmgenre"]["whitelist"] = str(tmp_path / "no-such-genres.txt")
        item = self.add_track(self.media.mp3[0])
        with pytest.raises(ui.UserError, match="whitelist file .*: no such file"):
            self.run_command("mmgenre")
        assert row(item)["genres"] == []

    def test_a_slash_genre_list_is_not_taken_for_a_path(self):
        self.config["mmgenre"]["whitelist"] = "Old-Time / Historic, Rock"
        item = self.add_track(self.media.mp3[0])
        self.run_command("mmgenre")
        assert row(item)["genres"] == ["Rock"]

    def test_album_fields_do_not_leak_into_item_queries(self, tmp_path):
        from .plugin_helpers import truncated_mp3

        good = self.add_track(self.media.mp3[0])
        bad = self.add_track(truncated_mp3(self.media.mp3[1], tmp_path / "short.mp3"))
        self.lib.add_album([good, bad])
        self.run_command("mmgenre", "-a")
        album = self.lib.albums().get()
        assert album["mmgenre_album_genre"] == "Rock"
        assert [i.id for i in self.lib.items("mmgenre_genre:Rock")] == [good.id]
        assert "mmgenre_genre" not in album

    @pytest.mark.parametrize("flags, genres", [
        (["--no-force", "--no-keep-existing"], ["Jazz"]),  # neither in force: the user's genre stays
        (["--no-keep-existing"], ["Rock"]),  # force from the config, replacing instead of adding
        (["--no-force"], ["Jazz", "Rock"]),  # keep_existing from the config alone: adding
        ([], ["Jazz", "Rock"]),
    ], ids=["both", "no-keep-existing", "no-force", "config"])
    def test_no_force_and_no_keep_existing_undo_the_config(self, flags, genres):
        self.config["mmgenre"]["force"] = True
        self.config["mmgenre"]["keep_existing"] = True
        item = self.add_track(self.media.mp3[0], genres=["Jazz"])
        self.run_command("mmgenre", *flags)
        assert row(item)["genres"] == genres

    def test_no_cuda_message_names_no_missing_option(self, monkeypatch):
        import torch

        from mmgenre_core.device import resolve_device
        from mmgenre_core.errors import ConfigError

        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        with pytest.raises(ConfigError) as exc:
            resolve_device("cuda")
        assert "--device" not in str(exc.value) and "'auto'" in str(exc.value)


def test_readme_config_keeps_beets_default_plugins() -> None:
    import re

    import yaml

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", readme, re.S)]
    plugin_lists = [b["plugins"] for b in blocks if isinstance(b, dict) and "plugins" in b]
    assert plugin_lists and all("musicbrainz" in p and "mmgenre" in p for p in plugin_lists)
    assert "plugins: [mmgenre]" not in readme


class TestBrokenModel(HostileTest):
    @pytest.mark.parametrize("content", [b"", b"not a model", b"PK\x03\x04broken zip"],
                             ids=["empty", "text", "truncated-zip"])
    def test_broken_checkpoint_is_one_clear_error(self, tmp_path, content):
        bad = tmp_path / "model.pt"
        bad.write_bytes(content)
        self.config["mmgenre"]["model"] = str(bad)
        item = self.add_track(self.media.mp3[0])
        before = row(item)
        with pytest.raises(ui.UserError, match="cannot load the model"):
            self.run_command("mmgenre")
        assert row(item) == before and self.integrity() == "ok"

    def test_nan_model_is_refused_at_load(self, tmp_path):
        import torch

        from mmgenre_core.storage import read_weights_only

        payload = read_weights_only(self.models["rock"])
        for key, value in payload["state_dict"].items():
            if value.is_floating_point():
                payload["state_dict"][key] = torch.full_like(value, float("nan"))
        bad = tmp_path / "nan.pt"
        torch.save(payload, bad)
        self.config["mmgenre"]["model"] = str(bad)
        item = self.add_track(self.media.mp3[0])
        with pytest.raises(ui.UserError, match="NaN"):
            self.run_command("mmgenre")
        assert row(item)["genres"] == []


class TestGeniusFaults(HostileTest):
    @pytest.mark.parametrize("mode", ["error", "timeout", "trickle", "huge_page", "huge_json", "invalid_json"])
    def test_a_bad_genius_costs_seconds_and_tags_everything(self, tmp_path, mode):
        with GeniusServer() as server:
            server.mode, server.delay = mode, (2.0 if mode == "timeout" else 0.2)
            for key, value in genius_config(server, tmp_path / "cache", genius_timeout=1.0).items():
                self.config["mmgenre"][key] = value
            items = [self.add_track(p, name=f"{n}-{p.name}") for n in range(2) for p in self.media.mp3]
            started = time.perf_counter()
            self.run_command("mmgenre")
            elapsed = time.perf_counter() - started
        assert all(row(item)["genres"] == ["Rock"] for item in items)
        # 8 tracks; after 3 errors in a row Genius is not asked again: at most ~3 timeouts.
        assert elapsed < 15, f"{mode}: {elapsed:.1f} s"

    @pytest.mark.parametrize("damage", ["read-only folder", "corrupt file"])
    def test_an_unusable_genius_cache_is_not_fatal(self, tmp_path, damage):
        cache = tmp_path / "cache"
        cache.mkdir()
        if damage == "corrupt file":
            (cache / "genius-lyrics.sqlite3").write_bytes(b"this is not a database" * 100)
        else:
            os.chmod(cache, 0o555)
        with GeniusServer() as server:
            for key, value in genius_config(server, cache).items():
                self.config["mmgenre"][key] = value
            item = self.add_track(self.media.mp3[0])
            self.run_command("mmgenre")
        assert row(item)["genres"] == ["Rock"]


# --------------------------------------------------------------------------- processes


def beets_env(tmp_path: Path, model: Path, *, extra: str = "") -> dict[str, str]:
    """A beets config folder for a subprocess: a library of real clips, the given model."""
    beetsdir = tmp_path / "beetsdir"
    beetsdir.mkdir(exist_ok=True)
    (beetsdir / "config.yaml").write_text(textwrap.dedent(f"""\
        directory: {tmp_path / 'music'}
        library: {tmp_path / 'library.db'}
        plugins: [mmgenre]
        import:
            write: yes
            copy: no
            quiet: yes
        mmgenre:
            model: {model}
            auto: no
            genius_cache: no
        """) + extra, encoding="utf-8")
    # PYTHONFAULTHANDLER: a child that hangs dumps every thread's stack on SIGABRT
    # (stopped_output), so a rare hang after Ctrl-C says where it waits.
    return {**os.environ, "BEETSDIR": str(beetsdir), "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}


def default_sigint() -> None:
    """In the child before exec: Ctrl-C as a terminal delivers it. A shell that starts the
    tests in the background makes them ignore SIGINT, and a child would inherit that and
    never see the Ctrl-C the tests send (two Ctrl-C tests failed so in a clean-clone run)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stopped_output(proc: subprocess.Popen, *, timeout: float) -> str:
    """The output of a beet child that must stop within ``timeout`` seconds (after a
    signal). One that does not is made to dump its threads' stacks (SIGABRT with
    PYTHONFAULTHANDLER set) and the test fails with them."""
    try:
        return proc.communicate(timeout=timeout)[0].decode(errors="replace")
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            out = proc.communicate(timeout=30)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            proc.kill()
            out = proc.communicate()[0].decode(errors="replace")
        pytest.fail(f"beet did not stop within {timeout:g} s; its output and stacks:\n{out[-20000:]}")


def test_a_child_that_does_not_stop_fails_with_its_stacks():
    child = subprocess.Popen([sys.executable, "-c", "import time\ndef waiting_here():\n    time.sleep(60)\nwaiting_here()"],
                             env={**os.environ, "PYTHONFAULTHANDLER": "1"}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
    with pytest.raises(pytest.fail.Exception, match=r"(?s)did not stop within 1 s.*waiting_here"):
        stopped_output(child, timeout=1)
    assert child.poll() is not None


def beet(env: dict[str, str], *args: str, **kwargs: Any) -> subprocess.Popen:
    kwargs.setdefault("preexec_fn", default_sigint)
    return subprocess.Popen([sys.executable, "-m", "beets", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, **kwargs)


def real_library(tmp_path: Path, env: dict[str, str], n: int) -> list[Path]:
    """``n`` real Emotify clips (tags as shipped, genre removed) imported as-is."""
    clips = sorted(EMOTIFY.glob("*/*.mp3"))[:n]
    folder = tmp_path / "music"
    paths = []
    for k, clip in enumerate(clips):
        dst = copy_file(clip, folder / f"{k:03d}-{clip.name}")
        set_tags(dst)
        paths.append(dst)
    proc = beet(env, "import", "-A", str(folder))
    out = proc.communicate(timeout=300)[0].decode(errors="replace")
    assert proc.returncode == 0, out
    return paths


def library_state(tmp_path: Path) -> dict[str, tuple[list[str], bool]]:
    """{path: (genres in the row, unwritten mark)}, read with beets from the database file."""
    from beets.library import Library

    db = sqlite3.connect(tmp_path / "library.db")
    try:
        assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()
    lib = Library(str(tmp_path / "library.db"), directory=str(tmp_path / "music"))
    try:
        return {os.fsdecode(item.path): (list(item.genres), bool(item.get("mmgenre_unwritten", None,
                                                                         with_album=False)))
                for item in lib.items()}
    finally:
        lib._close()


def rows_agree_with_files(tmp_path: Path) -> list[str]:
    """Paths whose file genres differ from their row's, or that still carry the mark."""
    bad = []
    for path, (genres, marked) in library_state(tmp_path).items():
        if marked or read_genres(path) != genres:
            bad.append(f"{path}: row {genres}, file {read_genres(path)}, marked {marked}")
    return bad


def wait_for_rows(tmp_path: Path, count: int, proc: subprocess.Popen, timeout: float = 120, *,
                  key: str = "mmgenre_model", poll: float = 0.05) -> None:
    """Until ``count`` rows carry the flexible field ``key`` (default: mmgenre's model id,
    the run is under way; ``mmgenre_unwritten``: a row is marked)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            db = sqlite3.connect(tmp_path / "library.db", timeout=1)
            n = db.execute("SELECT count(*) FROM item_attributes WHERE key = ?", (key,)).fetchone()[0]
            db.close()
        except sqlite3.Error:
            n = 0
        if n >= count:
            return
        time.sleep(poll)
    raise AssertionError(f"the run did not get to {count} rows with {key}")


@pytest.fixture(scope="module")
def default_model() -> Path:
    from mmgenre_core.predict import default_model_path

    return default_model_path()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_killed_run_leaves_rows_and_files_in_step(tmp_path, default_model, sig, data_dir):
    """Killed mid-run: afterwards (for SIGKILL, after a plain rerun) every row agrees with
    its file, no mark is left, and the library passes integrity_check."""
    env = beets_env(tmp_path, default_model)
    paths = real_library(tmp_path, env, 72)  # the run must outlast the signal: 24 clips now take 1.5 s
    proc = beet(env, "mmgenre")
    wait_for_rows(tmp_path, 4, proc)
    proc.send_signal(sig)
    started = time.monotonic()
    out = stopped_output(proc, timeout=60)
    assert time.monotonic() - started < 15, "the run took too long to stop"
    if sig == signal.SIGINT:
        # Ctrl-C: the run writes the files of the rows it stored, then exits 130: every
        # row agrees with its file and no mark is left.
        assert "Traceback" not in out and proc.returncode == 130, out
        assert rows_agree_with_files(tmp_path) == []
    rerun = beet(env, "mmgenre")
    out = rerun.communicate(timeout=600)[0].decode(errors="replace")
    assert rerun.returncode == 0, out
    state = library_state(tmp_path)
    assert all(genres for genres, _ in state.values()) and len(state) == len(paths)
    assert rows_agree_with_files(tmp_path) == []


def test_a_kill_between_row_and_file_is_finished_by_the_next_run(tmp_path, default_model, data_dir):
    """The one window a kill can hit: the row stored and marked, the file not yet
    written. Simulated by marking a tagged row by hand and undoing its file."""
    env = beets_env(tmp_path, default_model)
    paths = real_library(tmp_path, env, 3)
    proc = beet(env, "mmgenre")
    assert proc.wait(timeout=300) == 0
    victim = paths[0]
    genres = read_genres(victim)
    set_tags(victim)  # the file as before the write
    from beets.library import Library

    lib = Library(str(tmp_path / "library.db"), directory=str(tmp_path / "music"))
    [item] = [it for it in lib.items() if os.fsdecode(it.path) == str(victim)]
    item["mmgenre_unwritten"] = True  # as the row stands when a kill hits between row and file
    item.store()
    lib._close()
    assert read_genres(victim) == [] and rows_agree_with_files(tmp_path)

    out = beet(env, "mmgenre").communicate(timeout=300)[0].decode(errors="replace")

    assert "interrupted run left unwritten" in out or read_genres(victim) == genres
    assert read_genres(victim) == genres and rows_agree_with_files(tmp_path) == []


def test_two_runs_at_once_on_one_library(tmp_path, default_model, data_dir):
    env = beets_env(tmp_path, default_model)
    real_library(tmp_path, env, 12)
    first, second = beet(env, "mmgenre", "-f"), beet(env, "mmgenre", "-f")
    outs = [p.communicate(timeout=600)[0].decode(errors="replace") for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outs
    assert "Traceback" not in "".join(outs)
    assert rows_agree_with_files(tmp_path) == []
    assert all(genres for genres, _ in library_state(tmp_path).values())


def test_ctrl_c_while_genius_trickles_stops_at_once(tmp_path, default_model, data_dir):
    with GeniusServer() as server:
        server.mode, server.delay = "trickle", 0.5
        extra = textwrap.indent(textwrap.dedent(f"""\
            genius_token: test-token
            genius_api_root: {server.url}/
            genius_web_root: {server.url}/
            genius_timeout: 30
            """), "    ")
        env = beets_env(tmp_path, default_model, extra="")
        config = Path(env["BEETSDIR"]) / "config.yaml"
        config.write_text(config.read_text(encoding="utf-8").replace("    genius_cache: no\n",
                                                                     "    genius_cache: no\n" + extra),
                          encoding="utf-8")
        real_library(tmp_path, env, 6)
        proc = beet(env, "mmgenre")
        deadline = time.monotonic() + 60
        while not server.search_requests and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.search_requests, "Genius was never asked"
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        out = proc.communicate(timeout=60)[0].decode(errors="replace")
        # The bound is what a user would call "at once" next to the lookup's 30-s deadline:
        # alone, or after the test files before it, this takes 0.6-0.8 s, but two of four
        # full-suite runs of 2026-12-02 took 7.0 s (beside another test run) and 6.5 s (a
        # clean-clone CI run); the cause was not found, so the output is shown on failure.
        took = time.monotonic() - started
        assert took < 15, f"Ctrl-C took {took:.1f} s:\n{out[-3000:]}"
    assert rows_agree_with_files(tmp_path) == []


def test_import_with_a_broken_model_copies_everything_untagged(tmp_path, data_dir):
    """A checkpoint fault aborted `beet import` (copy: yes) half-way, leaving rows that
    pointed at the source folder: now the import finishes, says why once, tags nothing."""
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    env = beets_env(tmp_path, bad)
    config = Path(env["BEETSDIR"]) / "config.yaml"
    config.write_text(config.read_text(encoding="utf-8").replace("copy: no", "copy: yes")
                      .replace("auto: no", "auto: yes"), encoding="utf-8")
    source = tmp_path / "incoming"
    for k, clip in enumerate(sorted(EMOTIFY.glob("*/*.mp3"))[:3]):
        set_tags(copy_file(clip, source / f"{k}.mp3"))
    proc = beet(env, "import", "-A", str(source))
    out = proc.communicate(timeout=300)[0].decode(errors="replace")
    assert proc.returncode == 0, out
    assert out.count("cannot load the model") == 1 and "Traceback" not in out, out
    state = library_state(tmp_path)
    assert len(state) == 3
    assert all(path.startswith(str(tmp_path / "music")) and genres == [] for path, (genres, _) in state.items())
