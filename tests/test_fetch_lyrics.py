"""training/fetch_lyrics.py against the local Genius (tests/genius_server.py) on 127.0.0.1.

The command is a thin loop over mmgenre_core.genius.GeniusClient, the plugin's client:
the same matching rule, the same SQLite cache, the same failure handling.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mmgenre_core.genius import clean_title, titles_match
from mmgenre_core.text import clean_lyrics
from training.fetch_lyrics import is_known, load_tracks, main, open_cache

from .fixtures_training.fma_fixture import build_fma_fixture
from .genius_server import GeniusServer

# Made-up placeholder lines (no real lyrics anywhere in the tests).
SONGS = [  # artist, title, lyrics
    ("Paper Lanterns", "Harbor Lights", "placeholder line one about a harbor\nplaceholder line two about the lights\n\n"
                                        "placeholder line three"),
    ("The Test Pilots", "Runway Song", "we count the runway markers\none two three four"),
    ("Flaky Band", "Second Try", "it works on the third attempt\npersistence line"),
    ("Slowpoke", "Late Reply", "this answer comes too late"),
    ("Paper Lanterns", "A Completely Different Tune", "not the song that was asked for"),
]
TRACKS = [  # artist, title, genre
    ("Paper Lanterns", "Harbor Lights", "Pop"),
    ("The Test Pilots", "Runway Song (Remastered)", "Rock"),
    ("Flaky Band", "Second Try", "Rock"),
    ("Nobody Known", "Absent Song", "Folk"),
    ("Broken Band", "Always Fails", "Rock"),
    ("Paper Lanterns", "Unreleased Demo", "Pop"),  # Genius has only other songs of this artist
    ("", "No Artist", "Pop"),
]


def genius(*songs: tuple[str, str, str]) -> GeniusServer:
    server = GeniusServer()
    for artist, title, lyrics in songs or SONGS:
        server.add_song(artist, title, lyrics)
    return server


def write_manifest(path: Path, tracks) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "genre", "artist", "title"])
        for i, (artist, title, genre) in enumerate(tracks):
            w.writerow([f"music/{i:02d}.mp3", genre, artist, title])
    return path


@pytest.fixture
def manifest(tmp_path) -> Path:
    return write_manifest(tmp_path / "tracks.csv", TRACKS)


@pytest.fixture(autouse=True)
def token(monkeypatch):
    monkeypatch.setenv("GENIUS_ACCESS_TOKEN", "local-test-token")


def run(server: GeniusServer, manifest: Path, out: Path, *extra: str) -> int:
    return main(["--data", f"manifest:{manifest}", "--out", str(out), "--api-root", server.url,
                 "--cache-dir", str(out.parent / "cache"), "--sleep", "0", "--backoff", "0.01", "--timeout", "2",
                 "--no-progress", *extra])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def known(out: Path, manifest: Path, *, retry_missing_days: float = 30.0) -> list[str]:
    cache = open_cache(out.parent / "cache", retry_missing_days=retry_missing_days)
    try:
        return [t.title for t in load_tracks(None, [], [f"manifest:{manifest}"]) if t.artist and is_known(cache, t)]
    finally:
        cache.close()


def test_fetch_resume_and_summary(manifest, tmp_path, capsys, caplog):
    out = tmp_path / "lyrics.jsonl"
    with genius() as server:
        server.fail_first = {"Second Try": 2}
        server.always_fail = {"Always Fails"}
        assert run(server, manifest, out, "--retries", "3") == 0
        summary = capsys.readouterr().out
        assert "lyrics for 3 of 7 tracks" in summary
        assert "3 found, 2 not found, 1 failed" in summary and "1 without artist or title" in summary
        records = read_jsonl(out)
        assert [r["title"] for r in records] == ["Harbor Lights", "Runway Song (Remastered)", "Second Try"]
        r0 = records[0]
        assert r0["path"].endswith("music/00.mp3") and r0["genre"] == "Pop" and r0["source"] == "genius"
        assert r0["url"] == server.url + "/Paper-Lanterns-Harbor-Lights-lyrics"
        # The page's lyrics containers were read, the header beside them was not.
        assert clean_lyrics(r0["lyrics"]) == [line for line in SONGS[0][2].splitlines() if line]
        assert "Contributors" not in r0["lyrics"]
        # Retries: 2 failures then success; the always-failing track tried 1 + 3 times, logged, not fatal.
        assert server.searches_for("Second Try") == 3
        assert server.searches_for("Always Fails") == 4
        assert any("HTTP 500" in rec.message for rec in caplog.records)
        # A rerun asks only for what failed; found and not-found tracks come from the cache.
        n = len(server.search_requests)
        assert run(server, manifest, out, "--retries", "0") == 0
        assert len(server.search_requests) == n + 1 and server.searches_for("Always Fails") == 5
        assert "5 from the cache" in capsys.readouterr().out
        assert read_jsonl(out) == records
        # Not-found tracks are asked again once they are old enough.
        assert run(server, manifest, out, "--retries", "0", "--retry-missing-days", "0") == 0
        assert [server.searches_for(t) for t in ("Absent Song", "Unreleased Demo", "Always Fails", "Harbor Lights")] \
            == [2, 2, 6, 1]


def test_interrupted_run_resumes_from_the_cache(manifest, tmp_path, capsys):
    out = tmp_path / "lyrics.jsonl"
    with genius() as server:
        assert run(server, manifest, out, "--limit", "2") == 0  # stands for an interrupted run
        assert "4 left for a later run" in capsys.readouterr().out
        assert known(out, manifest) == ["Harbor Lights", "Runway Song (Remastered)"]
        assert run(server, manifest, out) == 0
        assert all(server.searches_for(clean_title(title)) == 1 for _, title, _ in TRACKS[:6])  # nothing asked twice
        assert "2 from the cache, 4 asked now" in capsys.readouterr().out
        assert len(read_jsonl(out)) == 3  # no faults this time: Second Try is found too


def test_one_matching_rule_timeouts_and_a_rejected_token(tmp_path, capsys):
    out = tmp_path / "lyrics.jsonl"
    manifest = write_manifest(tmp_path / "slow.csv", [("Slowpoke", "Late Reply", "Rock"),
                                                      ("Paper Lanterns", "Unreleased Demo", "Pop"),
                                                      ("Paper Lanterns", "Different", "Pop")])
    with genius() as server:
        server.slow = {"Late Reply": 3.0}
        assert run(server, manifest, out, "--timeout", "0.5", "--retries", "0") == 0
        # Same artist, other songs: Genius offers them, the title rule refuses them, also
        # "A Completely Different Tune" for "Different" (no substring matches).
        assert "0 found, 2 not found, 1 failed" in capsys.readouterr().out
        assert known(out, manifest) == ["Unreleased Demo", "Different"]  # failures are not cached
    with genius() as server:
        server.unauthorized = True
        assert run(server, write_manifest(tmp_path / "t.csv", TRACKS), tmp_path / "x.jsonl") == 2
        assert "rejected the access token (HTTP 401)" in capsys.readouterr().err
        assert len(server.search_requests) == 1  # a rejected token stops the run at once


def test_missing_token_is_a_clear_error(manifest, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("GENIUS_ACCESS_TOKEN")
    assert main(["--data", f"manifest:{manifest}", "--out", str(tmp_path / "o.jsonl"),
                 "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 2
    assert "GENIUS_ACCESS_TOKEN is not set" in capsys.readouterr().err
    monkeypatch.setenv("MY_GENIUS", "tok")
    with genius() as server:
        assert run(server, manifest, tmp_path / "o.jsonl", "--token-env", "MY_GENIUS") == 0


def test_fma_config_tracks_and_progress_bar(data_dir, tmp_path, capsys):
    fx = build_fma_fixture(data_dir, tmp_path / "fma")
    config = tmp_path / "fma.json"
    config.write_text(json.dumps({"data": {"audio": [{"type": "fma", "metadata_dir": str(fx.metadata_dir),
                                                      "audio_dir": str(fx.audio_dir)}]}}))
    first = fx.labels[0]  # a real FMA track: its real artist and title from tracks.csv
    out = tmp_path / "fma_lyrics.jsonl"
    with genius((first["artist"], first["title"], "a placeholder line\nanother placeholder")) as server:
        assert main(["--config", str(config), "--out", str(out), "--api-root", server.url,
                     "--cache-dir", str(tmp_path / "cache"), "--sleep", "0"]) == 0
    captured = capsys.readouterr()
    assert "genius" in captured.err and "track" in captured.err  # the progress bar
    records = read_jsonl(out)
    assert len(records) == 1 and records[0]["track_id"] == int(first["track_id"])
    assert records[0]["key"] == f"fma:{int(first['track_id']):06d}"
    # The file is what a training config's data.lyrics attaches by track_id.
    from training.datasets import load_fma
    from training.lyrics_data import attach_lyrics, read_jsonl as read_lyrics

    examples, _ = load_fma({"type": "fma", "metadata_dir": str(fx.metadata_dir), "audio_dir": str(fx.audio_dir)})
    assert attach_lyrics(examples, read_lyrics(out), base=out.parent) == 1


def test_the_shared_title_rule():
    assert titles_match("Runway Song (Remastered)", "Runway Song")
    assert titles_match("Harbor Lights", "harbor lights!")
    assert not titles_match("One", "One More Time")  # training's old substring rule matched these
    assert not titles_match("Unreleased Demo", "A Completely Different Tune")
