"""The Genius client against a local genius.com stand-in: lyrics, cache, timeouts, errors."""

from __future__ import annotations

import os
import sqlite3
import time

import pytest

from mmgenre_core import genius as g
from mmgenre_core.genius import GeniusClient

from .plugin_helpers import LYRICS_JSONL, GeniusServer, lyrics_records, same_lyrics

pytestmark = pytest.mark.usefixtures("data_dir")  # fails, never skips, without the real data


@pytest.fixture
def records():
    return lyrics_records(3)


@pytest.fixture
def server(records):
    with GeniusServer() as srv:
        for rec in records:
            srv.add_song(rec["artist"], rec["title"], rec["lyrics"])
        yield srv


@pytest.fixture
def messages():
    return {"warn": [], "debug": []}


def make_client(server, tmp_path, messages, **kwargs):
    kwargs.setdefault("cache_dir", tmp_path / "cache")
    kwargs.setdefault("timeout", 0.5)
    return GeniusClient("test-token", api_root=server.url, web_root=server.url,
                        warn=messages["warn"].append, debug=messages["debug"].append, **kwargs)


def test_finds_lyrics_like_genius_serves_them(server, records, tmp_path, messages):
    client = make_client(server, tmp_path, messages)
    rec = records[0]
    result = client.fetch(rec["artist"], rec["title"])
    assert result.status == g.FOUND and result.url.startswith(server.url)
    # The same sung lines (section headers such as "[Chorus]" aside) come back.
    assert same_lyrics(result.lyrics, rec["lyrics"])
    # The API was called with the token, the page without it.
    search = server.search_requests[0]
    assert search[2].get("authorization") == "Bearer test-token"
    assert any(path.endswith("-lyrics") for path, _, _ in server.requests)
    assert messages["warn"] == []


def test_cache_answers_a_rerun_without_asking(server, records, tmp_path, messages):
    rec = records[1]
    first = make_client(server, tmp_path, messages)
    assert first.fetch(rec["artist"], rec["title"]).status == g.FOUND
    assert first.fetch("Nobody Known", "No Such Song").status == g.NOT_FOUND
    first.close()
    asked = len(server.requests)
    again = make_client(server, tmp_path, messages)  # a new run, same cache folder
    hit = again.fetch(rec["artist"].upper(), rec["title"] + " ")
    assert hit.status == g.CACHED and same_lyrics(hit.lyrics, rec["lyrics"])
    assert again.fetch("Nobody Known", "No Such Song").status == g.NOT_FOUND  # negative answers cached too
    assert len(server.requests) == asked and again.requests == 0


def test_negative_answers_expire(server, tmp_path, messages):
    client = make_client(server, tmp_path, messages, negative_ttl=0.0)
    client.fetch("Nobody Known", "No Such Song")
    time.sleep(0.01)
    client.fetch("Nobody Known", "No Such Song")
    assert len(server.search_requests) == 2


def test_timeout_is_an_error_result_not_an_exception(server, records, tmp_path, messages):
    server.mode, server.delay = "timeout", 2.0
    client = make_client(server, tmp_path, messages, timeout=0.3)
    started = time.perf_counter()
    result = client.fetch(records[0]["artist"], records[0]["title"])
    assert time.perf_counter() - started < 1.5
    assert result.status == g.ERROR and result.lyrics is None and "timed out" in result.error
    assert any("timed out" in m for m in messages["warn"])
    # Errors are not cached: once the site is back, the song is found.
    server.mode = "ok"
    assert client.fetch(records[0]["artist"], records[0]["title"]).status == g.FOUND


@pytest.mark.parametrize(
    "mode, status, in_error",
    [
        pytest.param("error", g.ERROR, "HTTP 500", id="http-500"),
        pytest.param("empty", g.NOT_FOUND, None, id="no-hits"),
        pytest.param("page_error", g.NOT_FOUND, None, id="song-page-broken"),
    ],
)
def test_site_problems(server, records, tmp_path, messages, mode, status, in_error):
    server.mode = mode
    client = make_client(server, tmp_path, messages)
    result = client.fetch(records[0]["artist"], records[0]["title"])
    assert result.status == status and result.lyrics is None
    if in_error:
        assert in_error in result.error


@pytest.mark.parametrize(
    "mode, in_error",
    [
        pytest.param("trickle", "1 s", id="trickling-server"),  # "timed out after" or "no complete answer within"
        pytest.param("huge_page", "larger than 8 MB", id="huge-lyrics-page"),
        pytest.param("huge_json", "larger than 8 MB", id="huge-json-answer"),
        pytest.param("invalid_json", "JSONDecodeError", id="invalid-json"),
    ],
)
def test_hostile_servers_cost_bounded_time_and_memory(server, records, tmp_path, messages, mode, in_error):
    """A trickling server kept a lookup going for minutes and a huge page took 9.8 GB:
    the whole lookup must end by its deadline and read at most 8 MB."""
    import tracemalloc

    server.mode, server.delay = mode, 0.2
    client = make_client(server, tmp_path, messages, timeout=1.0)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        result = client.fetch(records[0]["artist"], records[0]["title"])
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.status == g.ERROR and result.lyrics is None and in_error in result.error, result
    assert elapsed < 2.5, f"lookup took {elapsed:.1f} s with a 1-s timeout"
    assert peak < 40 * 1024 * 1024, f"peak {peak / 1e6:.0f} MB"


def test_cancel_ends_a_lookup_under_way(server, records, tmp_path, messages):
    """Ctrl-C while Genius trickled took 256 s to exit: cancel() must end a lookup at once."""
    import threading

    server.mode, server.delay = "trickle", 0.2
    client = make_client(server, tmp_path, messages, timeout=30.0)
    results = []
    worker = threading.Thread(target=lambda: results.append(client.fetch(records[0]["artist"],
                                                                         records[0]["title"])))
    worker.start()
    time.sleep(0.5)
    started = time.perf_counter()
    client.cancel()
    worker.join(timeout=5)
    assert not worker.is_alive() and time.perf_counter() - started < 1.5
    assert results[0].lyrics is None and results[0].status == g.DISABLED
    assert client.fetch(records[1]["artist"], records[1]["title"]).status == g.DISABLED  # asks nothing more


def test_gives_up_after_repeated_failures(server, records, tmp_path, messages):
    server.mode = "error"
    client = make_client(server, tmp_path, messages, max_failures=2)
    statuses = [client.fetch(f"Artist {i}", f"Song {i}").status for i in range(5)]
    assert statuses == [g.ERROR, g.ERROR, g.DISABLED, g.DISABLED, g.DISABLED]
    assert len(server.requests) == 2 and client.disabled
    assert any("not asking Genius again" in m for m in messages["warn"])


def test_a_rejected_token_stops_at_once(server, records, tmp_path, messages):
    server.unauthorized = True
    client = make_client(server, tmp_path, messages, max_failures=5, retries=2, backoff=0.01)
    first = client.fetch(records[0]["artist"], records[0]["title"])
    assert first.status == g.ERROR and first.error == "HTTP 401"
    assert client.token_rejected and "rejected the access token" in client.disabled_reason
    assert client.fetch(records[1]["artist"], records[1]["title"]).status == g.DISABLED
    assert len(server.search_requests) == 1  # no retry, no second track


def test_retries_with_backoff_then_finds(server, records, tmp_path, messages):
    rec = records[0]
    server.fail_first = {rec["title"]: 2}
    client = make_client(server, tmp_path, messages, retries=2, backoff=0.01)
    assert client.fetch(rec["artist"], rec["title"]).status == g.FOUND
    assert server.searches_for(rec["title"]) == 3 and client.failures == 0
    assert messages["warn"] == [] and sum("asking again" in m for m in messages["debug"]) == 2


def test_unreachable_server(tmp_path, messages):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = GeniusClient("t", api_root=f"http://127.0.0.1:{port}", web_root=f"http://127.0.0.1:{port}",
                          cache_dir=False, timeout=0.5, warn=messages["warn"].append)
    result = client.fetch("Artist", "Song")
    assert result.status == g.ERROR and "ConnectionError" in result.error


def test_wrong_artist_is_not_a_match(server, records, tmp_path, messages):
    client = make_client(server, tmp_path, messages)
    assert client.fetch("Somebody Else Entirely", records[0]["title"]).status == g.NOT_FOUND


def test_missing_artist_or_title_asks_nothing(server, tmp_path, messages):
    client = make_client(server, tmp_path, messages)
    assert client.fetch("", "Song").status == g.NOT_FOUND
    assert client.fetch("Artist", None).status == g.NOT_FOUND
    assert server.requests == []


def test_unusable_cache_folder_is_not_fatal(server, records, tmp_path, messages):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    client = make_client(server, tmp_path, messages, cache_dir=blocker / "cache")
    assert client.cache is None and any("cache" in m for m in messages["warn"])
    assert client.fetch(records[0]["artist"], records[0]["title"]).status == g.FOUND


def test_default_cache_is_in_the_user_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    client = GeniusClient("t", timeout=1)
    assert client.cache is not None
    assert str(client.cache.path).startswith(str(tmp_path / "xdg"))
    assert os.path.basename(os.path.dirname(client.cache.path)) == "mmgenre"
    with sqlite3.connect(client.cache.path) as db:
        assert db.execute("SELECT count(*) FROM lyrics").fetchone() == (0,)
    client.close()


def test_token_required():
    with pytest.raises(ValueError):
        GeniusClient("")


@pytest.mark.parametrize(
    "wanted, found, match",
    [
        pytest.param("Song (feat. Somebody)", "Song", True, id="featuring-in-title"),
        pytest.param("Song - Remastered 2011", "Song", True, id="remaster-suffix"),
        pytest.param("Song [Live]", "song", True, id="bracket-and-case"),
        pytest.param("Café del Mar", "Cafe Del Mar", True, id="accents"),
        pytest.param("Song", "Another Song", False, id="different-title"),
    ],
)
def test_titles_match(wanted, found, match):
    assert g.titles_match(wanted, found) is match


@pytest.mark.parametrize(
    "wanted, found, match",
    [
        pytest.param("AC/DC", "ACDC", True, id="punctuation"),
        pytest.param("Beyoncé feat. Jay-Z", "Beyonce", True, id="featuring-in-artist"),
        pytest.param("Simon & Garfunkel", "Simon and Garfunkel", True, id="ampersand"),
        pytest.param("The Band", "Band of Horses", False, id="different-artist"),
    ],
)
def test_artists_match(wanted, found, match):
    assert g.artists_match(wanted, found) is match
