"""The one local Genius for every test: a genius.com stand-in on 127.0.0.1.

It answers what lyricsgenius asks for: the search API (``.../search?q=...``, any
prefix, so both ``api_root`` styles work) and song pages whose lyrics sit in
``div[data-lyrics-container="true"]`` elements with ``<br/>`` line breaks, as on
genius.com. The lyrics in the tests are made-up placeholder lines.

Failures come two ways: ``mode`` for the whole server (timeouts, HTTP 500, trickling
answers, huge pages, invalid JSON...) and per song title (``fail_first``,
``always_fail``, ``slow``), plus ``unauthorized`` (every search answers 401, as for a
wrong token). Every request is logged in ``requests``.
"""

from __future__ import annotations

import html
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlparse




@dataclass
class Song:
    id: int
    artist: str
    title: str
    lyrics: str

    @property
    def path(self) -> str:
        return "/" + quote(f"{self.artist}-{self.title}-lyrics".replace(" ", "-"))


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up mid-answer is what the hostile-server tests do on purpose:
    no traceback for it on the test output."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


class GeniusServer:
    """A genius.com stand-in on 127.0.0.1: search API, song pages, and failure modes.

    ``mode``: "ok"; "timeout" (answers after ``delay`` seconds); "error" (HTTP 500
    JSON like the real API's); "empty" (no hits); "page_error" (search works, the
    song page is a 500 error page); "trickle" (every answer one small chunk per
    ``delay`` seconds); "huge_page" (search works, the page is ``huge_bytes`` long);
    "huge_json" (the search answer is ``huge_bytes`` long); "invalid_json" (the
    search answer is not JSON); "br_flood" (search works, the page is 7.6 MB of
    400,000 ``<br/>`` lines) and "deep_nesting" (200,000 nested tags), the two pages
    that kept lyricsgenius' parser busy for minutes.
    """

    def __init__(self) -> None:
        self.songs: list[Song] = []
        self.mode = "ok"
        self.delay = 3.0
        self.huge_bytes = 64 * 1024 * 1024
        # Per song title (matched in the search query, ignoring case):
        self.fail_first: dict[str, int] = {}  # title -> searches answered HTTP 500 before it works
        self.always_fail: set[str] = set()  # titles whose searches always get HTTP 500
        self.slow: dict[str, float] = {}  # title -> seconds to wait before answering its search
        self.unauthorized = False  # every search answers 401, as for a wrong token
        self._lock = threading.Lock()
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (path, query, headers)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                server._handle(self)

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> GeniusServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def add_song(self, artist: str, title: str, lyrics: str) -> Song:
        song = Song(1000 + len(self.songs), artist, title, lyrics)
        self.songs.append(song)
        return song

    def searches_for(self, title: str) -> int:
        """How many searches asked for ``title``."""
        return sum(title.lower() in parse_qs(q).get("q", [""])[0].lower() for _, q, _ in self.search_requests)

    def _title_fault(self, query: str) -> tuple[int | None, float]:
        """(HTTP status to answer with, seconds to wait) for a search query."""
        with self._lock:
            for title, n in self.fail_first.items():
                if title.lower() in query and n > 0:
                    self.fail_first[title] = n - 1
                    return 500, 0.0
        if any(title.lower() in query for title in self.always_fail):
            return 500, 0.0
        return None, max((sec for title, sec in self.slow.items() if title.lower() in query), default=0.0)

    @property
    def search_requests(self) -> list[tuple[str, str, dict[str, str]]]:
        return [r for r in self.requests if r[0].rstrip("/").endswith("search")]

    # -- responses --------------------------------------------------------------
    def _send(self, handler: BaseHTTPRequestHandler, status: int, body: str, ctype: str) -> None:
        data = body.encode("utf-8")
        handler.send_response(status)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        try:
            if self.mode == "trickle":  # a few bytes at a time, forever slow (bounded: 600 chunks)
                for start in range(0, min(len(data), 600 * 16), 16):
                    handler.wfile.write(data[start:start + 16])
                    handler.wfile.flush()
                    time.sleep(self.delay)
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _send_huge(self, handler: BaseHTTPRequestHandler, head: bytes, filler: bytes, ctype: str) -> None:
        """``huge_bytes`` of ``head`` + ``filler``..., streamed (never held in memory here)."""
        handler.send_response(200)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(self.huge_bytes))
        handler.end_headers()
        block = (filler * (65536 // len(filler) + 1))[:65536]
        try:
            handler.wfile.write(head)
            sent = len(head)
            while sent < self.huge_bytes:
                part = block[: self.huge_bytes - sent]
                handler.wfile.write(part)
                sent += len(part)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass

    def _song_json(self, song: Song) -> dict[str, Any]:
        return {
            "annotation_count": 0, "api_path": f"/songs/{song.id}", "artist_names": song.artist,
            "full_title": f"{song.title} by {song.artist}", "id": song.id, "instrumental": False,
            "lyrics_owner_id": 1, "lyrics_state": "complete", "lyrics_updated_at": 1700000000,
            "path": song.path, "pyongs_count": None, "title": song.title,
            "title_with_featured": song.title, "url": self.url + song.path,
            "primary_artist": {"api_path": "/artists/1", "id": 1, "name": song.artist,
                               "url": self.url + "/artists/" + quote(song.artist)},
        }

    def _page(self, song: Song) -> str:
        # Like genius.com: verses split over several containers (ads sit between
        # them), lines separated by <br/>, a blank line between verses.
        blocks = [b for b in song.lyrics.strip().split("\n\n") if b.strip()]
        containers = "".join(
            '<div data-lyrics-container="true" class="Lyrics__Container-sc-1ynbvzw-1 kUgSbL">'
            + "<br/>".join(html.escape(line) for line in block.splitlines())
            + ("<br/><br/>" if i < len(blocks) - 1 else "") + "</div>"
            for i, block in enumerate(blocks))
        return ("<!DOCTYPE html><html><head><title>" + html.escape(f"{song.artist} - {song.title} Lyrics")
                + '</title></head><body><div class="LyricsHeader__Container-sc-1 abc">'
                + html.escape(f"3 Contributors{song.title} Lyrics") + "</div>"
                + '<div id="lyrics-root">' + containers + "</div></body></html>")

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        parsed = urlparse(handler.path)
        self.requests.append((parsed.path, parsed.query, dict(handler.headers)))
        if self.mode == "timeout":
            time.sleep(self.delay)
        if self.mode == "error":
            self._send(handler, 500, json.dumps({"meta": {"status": 500, "message": "Internal Server Error"}}),
                       "application/json")
            return
        if parsed.path.rstrip("/").endswith("search"):
            if self.mode == "huge_json":
                self._send_huge(handler, b'{"meta": {"status": 200}, "response": {"hits": [], "x": "', b"a",
                                "application/json")
                return
            if self.mode == "invalid_json":
                self._send(handler, 200, '{"meta": {"status": 200}, "response": {"hits": [', "application/json")
                return
            query = parse_qs(parsed.query).get("q", [""])[0].lower()
            if self.unauthorized:
                self._send(handler, 401, json.dumps({"error": "invalid_token", "error_description":
                                                     "The access token provided is expired, revoked, malformed "
                                                     "or invalid"}), "application/json")
                return
            status, wait = self._title_fault(query)
            time.sleep(wait)
            if status:
                self._send(handler, status, json.dumps({"meta": {"status": status, "message": "Internal error"}}),
                           "application/json")
                return
            hits = [] if self.mode == "empty" else [
                {"highlights": [], "index": "song", "type": "song", "result": self._song_json(s)}
                for s in self.songs
                # Like Genius: the song asked for, and other songs of an artist named in the query.
                if s.title.lower() in query or s.artist.lower() in query]
            self._send(handler, 200, json.dumps({"meta": {"status": 200}, "response": {"hits": hits}}),
                       "application/json; charset=utf-8")
            return
        for song in self.songs:
            if parsed.path == song.path:
                if self.mode == "page_error":
                    self._send(handler, 500, "<html><body>Oops</body></html>", "text/html")
                elif self.mode == "br_flood":
                    self._send(handler, 200, '<html><body><div data-lyrics-container="true">'
                               + "word word word<br/>" * 400_000 + "</div></body></html>", "text/html")
                elif self.mode == "deep_nesting":
                    self._send(handler, 200, '<html><body><div data-lyrics-container="true">' + "<div><b>" * 200_000
                               + "deep words here" + "</b></div>" * 200_000 + "</div></body></html>", "text/html")
                elif self.mode == "huge_page":
                    self._send_huge(handler, self._page(song).encode("utf-8")[:-len(b"</div></body></html>")],
                                    b"<p>la la</p>", "text/html; charset=utf-8")
                else:
                    self._send(handler, 200, self._page(song), "text/html; charset=utf-8")
                return
        self._send(handler, 404, "<html><body>Page not found</body></html>", "text/html")
