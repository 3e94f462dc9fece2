"""training/fetch_lyrics.py against a local server on 127.0.0.1 that answers like Genius."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mmgenre_core.text import clean_lyrics
from training.fetch_lyrics import LyricsCache, main, needs_fetch, titles_match

from .fixtures_training.fma_fixture import build_fma_fixture
from .fixtures_training.genius_server import FakeGenius, FakeSong, Faults

# Made-up placeholder lines (no real lyrics anywhere in the tests).
SONGS = [
    FakeSong(101, "Paper Lanterns", "Harbor Lights", ["placeholder line one about a harbor",
                                                     "placeholder line two about the lights",
                                                     "placeholder line three"]),
    FakeSong(102, "The Test Pilots", "Runway Song", ["we count the runway markers", "one two three four"]),
    FakeSong(103, "Flaky Band", "Second Try", ["it works on the third attempt", "persistence line"]),
    FakeSong(104, "Slowpoke", "Late Reply", ["this answer comes too late"]),
    FakeSong(105, "Paper Lanterns", "A Completely Different Tune", ["not the song that was asked for"]),
]
TRACKS = [  # artist, title, genre
    ("Paper Lanterns", "Harbor Lights", "Pop"),
    ("The Test Pilots", "Runway Song (Remastered)", "Rock"),
    ("Flaky Band", "Second Try", "Rock"),
    ("Nobody Known", "Absent Song", "Folk"),
    ("Broken Band", "Always Fails", "Rock"),
    ("Paper Lanterns", "Unreleased Demo", "Pop"),  # Genius has only another song of this artist
    ("", "No Artist", "Pop"),
]


@pytest.fixture
def manifest(tmp_path) -> Path:
    path = tmp_path / "tracks.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "genre", "artist", "title"])
        for i, (artist, title, genre) in enumerate(TRACKS):
            w.writerow([f"music/{i:02d}.mp3", genre, artist, title])
    return path


@pytest.fixture(autouse=True)
def token(monkeypatch):
    monkeypatch.setenv("GENIUS_ACCESS_TOKEN", "local-test-token")


def run(server: FakeGenius, manifest: Path, out: Path, *extra: str) -> int:
    return main(["--data", f"manifest:{manifest}", "--out", str(out), "--api-root", server.root, "--sleep", "0",
                 "--backoff", "0.01", "--timeout", "2", "--no-progress", *extra])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_fetch_resume_and_summary(manifest, tmp_path, capsys, caplog):
    out = tmp_path / "lyrics.jsonl"
    faults = Faults(fail_first={"Second Try": 2}, always_fail={"Always Fails"})
    with FakeGenius(SONGS, faults) as server:
        assert run(server, manifest, out, "--retries", "3") == 0
        first = list(server.requests)
        summary = capsys.readouterr().out
        assert "lyrics for 3 of 7 tracks" in summary
        assert "3 found, 2 not found, 1 failed" in summary and "1 without artist or title" in summary
        records = read_jsonl(out)
        assert [r["title"] for r in records] == ["Harbor Lights", "Runway Song (Remastered)", "Second Try"]
        r0 = records[0]
        assert r0["path"].endswith("music/00.mp3") and r0["genre"] == "Pop" and r0["source"] == "genius"
        assert r0["url"] == "https://genius.com/Paper-Lanterns-Harbor-Lights-lyrics"
        # The page's lyrics containers were read; the header and the widget between them were not.
        lines = clean_lyrics(r0["lyrics"])
        assert lines[:3] == SONGS[0].lines and "Contributors" not in r0["lyrics"]
        assert "You might also like" not in r0["lyrics"]
        # Retries: 2 failures then success; the always-failing track tried 1 + 3 times, logged, not fatal.
        assert sum("Second+Try" in q for q in server.searches()) == 3
        assert sum("Always+Fails" in q for q in server.searches()) == 4
        assert any("HTTP 500" in rec.message for rec in caplog.records)
        # A rerun asks only for what failed; found and not-found tracks come from the cache.
        assert run(server, manifest, out, "--retries", "0") == 0
        again = server.requests[len(first):]
        assert again == [q for q in again if "Always+Fails" in q] and len(again) == 1
        assert "5 from the cache" in capsys.readouterr().out
        assert read_jsonl(out) == records
        # Not-found tracks are asked again once they are old enough.
        n = len(server.requests)
        assert run(server, manifest, out, "--retries", "0", "--retry-missing-days", "0") == 0
        asked = {q.split("?q=")[1] for q in server.requests[n:] if q.startswith("/api/search/multi")}
        assert asked == {"Absent+Song+Nobody+Known", "Unreleased+Demo+Paper+Lanterns", "Always+Fails+Broken+Band"}


def test_interrupted_run_resumes_from_the_cache(manifest, tmp_path, capsys):
    out = tmp_path / "lyrics.jsonl"
    with FakeGenius(SONGS) as server:
        assert run(server, manifest, out, "--limit", "2") == 0  # stands for an interrupted run
        assert "4 left for a later run" in capsys.readouterr().out
        cache = LyricsCache(f"{out}.cache.jsonl")
        assert len(cache.records) == 2
        cache.close()
        asked_first = {q for q in server.searches() if "multi" in q}
        assert run(server, manifest, out) == 0
        asked_second = [q for q in server.searches() if "multi" in q][len(asked_first):]
        assert not set(asked_second) & asked_first  # nothing asked twice
        assert "2 from the cache, 4 asked now" in capsys.readouterr().out
        assert len(read_jsonl(out)) == 3  # no faults this time: Second Try is found too


def test_title_check_timeout_and_rejected_token(manifest, tmp_path, capsys):
    out = tmp_path / "lyrics.jsonl"
    with FakeGenius(SONGS, Faults(slow={"Late Reply": 3.0})) as server:
        path = tmp_path / "slow.csv"
        path.write_text("path,genre,artist,title\na.mp3,Rock,Slowpoke,Late Reply\n"
                        "b.mp3,Pop,Paper Lanterns,Unreleased Demo\n")
        assert main(["--data", f"manifest:{path}", "--out", str(out), "--api-root", server.root, "--sleep", "0",
                     "--timeout", "0.5", "--retries", "0", "--no-progress"]) == 0
        assert "0 found, 1 not found, 1 failed" in capsys.readouterr().out
        cache = LyricsCache(f"{out}.cache.jsonl")
        assert "Timeout" in cache.records["manifest:" + tmp_path.name + ":a.mp3"]["error"]
        # Same artist, another song: lyricsgenius offers it, the title check refuses it.
        assert cache.records["manifest:" + tmp_path.name + ":b.mp3"]["status"] == "missing"
        cache.close()
    with FakeGenius(SONGS, Faults(unauthorized=True)) as server:
        assert run(server, manifest, tmp_path / "x.jsonl") == 2
        assert "rejected the access token" in capsys.readouterr().err


def test_missing_token_is_a_clear_error(manifest, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("GENIUS_ACCESS_TOKEN")
    assert main(["--data", f"manifest:{manifest}", "--out", str(tmp_path / "o.jsonl"), "--no-progress"]) == 2
    assert "GENIUS_ACCESS_TOKEN is not set" in capsys.readouterr().err
    monkeypatch.setenv("MY_GENIUS", "tok")
    with FakeGenius(SONGS) as server:
        assert main(["--data", f"manifest:{manifest}", "--out", str(tmp_path / "o.jsonl"), "--token-env",
                     "MY_GENIUS", "--api-root", server.root, "--sleep", "0", "--no-progress"]) == 0


def test_fma_config_tracks_and_progress_bar(data_dir, tmp_path, capsys):
    fx = build_fma_fixture(data_dir, tmp_path / "fma")
    config = tmp_path / "fma.json"
    config.write_text(json.dumps({"data": {"audio": [{"type": "fma", "metadata_dir": str(fx.metadata_dir),
                                                      "audio_dir": str(fx.audio_dir)}]}}))
    first = fx.labels[0]  # a real FMA track: its real artist and title from tracks.csv
    songs = [FakeSong(7, first["artist"], first["title"], ["a placeholder line", "another placeholder"])]
    out = tmp_path / "fma_lyrics.jsonl"
    with FakeGenius(songs) as server:
        assert main(["--config", str(config), "--out", str(out), "--api-root", server.root, "--sleep", "0"]) == 0
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


def test_retry_policy_and_title_matching():
    now = 1_000_000.0
    assert needs_fetch(None, retry_missing_days=30)
    assert needs_fetch({"status": "error"}, retry_missing_days=30)
    assert not needs_fetch({"status": "found"}, retry_missing_days=0)
    assert not needs_fetch({"status": "missing", "time": now - 86400}, retry_missing_days=30, now=now)
    assert needs_fetch({"status": "missing", "time": now - 31 * 86400}, retry_missing_days=30, now=now)
    assert titles_match("Runway Song (Remastered)", "Runway Song")
    assert titles_match("Harbor Lights", "harbor lights!")
    assert not titles_match("Unreleased Demo", "A Completely Different Tune")
