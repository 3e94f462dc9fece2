"""A local HTTP server on 127.0.0.1 that answers like Genius, for the lyrics fetcher's tests.

It serves what lyricsgenius asks for:

* ``GET /api/search/multi?q=...`` (public API "search all"): ``{"meta": ..., "response":
  {"sections": [{"type": "top_hit", "hits": [...]}, {"type": "song", "hits": [...]}, ...]}}``
* ``GET /api/search?q=...`` (the fallback search): ``{"response": {"hits": [...]}}``
* ``GET /<Artist-title-lyrics>``: a song page whose lyrics sit in
  ``div[data-lyrics-container="true"]`` elements with ``<br/>`` line breaks, a
  ``LyricsHeader`` div and annotation links inside, as on genius.com.

Song hits carry Genius's real fields (``url`` on https://genius.com/, ``path``,
``lyrics_state``, ``primary_artist``...). The lyrics are made-up placeholder lines.
Failures can be injected per song title: HTTP 500 for the first N searches, or
always; or a response slower than the client's timeout. Every request is logged
in ``server.requests``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


@dataclass
class FakeSong:
    id: int
    artist: str
    title: str
    lines: list[str]
    instrumental: bool = False

    @property
    def path(self) -> str:
        slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{self.artist} {self.title}").strip("-")
        return f"/{slug}-lyrics"

    def hit(self) -> dict:
        artist = {"_type": "artist", "api_path": f"/artists/{self.id + 1000}", "id": self.id + 1000,
                  "image_url": "https://images.genius.com/x.png", "is_meme_verified": False, "is_verified": False,
                  "name": self.artist, "url": "https://genius.com/artists/" + self.artist.replace(" ", "-")}
        return {"highlights": [], "index": "song", "type": "song", "result": {
            "_type": "song", "annotation_count": 1, "api_path": f"/songs/{self.id}", "artist_names": self.artist,
            "full_title": f"{self.title} by {self.artist}", "header_image_thumbnail_url": "", "id": self.id,
            "instrumental": self.instrumental, "language": "en", "lyrics_owner_id": 1,
            "lyrics_state": "complete", "lyrics_updated_at": 1600000000, "path": self.path,
            "primary_artist": artist, "primary_artist_names": self.artist,
            "relationships_index_url": f"https://genius.com{self.path}/sample", "release_date_components": None,
            "stats": {"unreviewed_annotations": 0, "hot": False, "pageviews": 1234},
            "title": self.title, "title_with_featured": self.title, "updated_by_human_at": 1600000000,
            "url": f"https://genius.com{self.path}"}}

    def page(self) -> str:
        body = "<br/>".join(
            f'<a href="/{self.id}/x" class="ReferentFragmentdesktop__ClickTarget-sc-110r0d9-0">'
            f'<span class="ReferentFragmentdesktop__Highlight-sc-110r0d9-1">{line}</span></a>' if i == 1 else line
            for i, line in enumerate(self.lines))
        half = len(self.lines) // 2
        return (
            "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"/>"
            f"<title>{self.artist} – {self.title} Lyrics | Genius Lyrics</title></head><body>"
            "<div id=\"lyrics-root\" class=\"Lyrics__Root-sc-1ynbvzw-1\">"
            "<div data-lyrics-container=\"true\" class=\"Lyrics__Container-sc-1ynbvzw-1 kUgSbL\">"
            "<div class=\"LyricsHeader__Container-sc-c7c26e1b-1\">3 Contributors"
            f"{self.title} Lyrics</div>[Verse 1]<br/>{body}</div>"
            "<div data-exclude-from-selection=\"true\" class=\"InreadContainer__Container\">You might also like</div>"
            "<div data-lyrics-container=\"true\" class=\"Lyrics__Container-sc-1ynbvzw-1 kUgSbL\">"
            f"[Chorus]<br/>{'<br/>'.join(self.lines[:half])}</div>"
            "</div></body></html>")


@dataclass
class Faults:
    fail_first: dict[str, int] = field(default_factory=dict)  # title -> searches answered 500 first
    always_fail: set[str] = field(default_factory=set)  # titles whose searches always get 500
    slow: dict[str, float] = field(default_factory=dict)  # title -> seconds to wait before answering
    unauthorized: bool = False  # every API call answers 401 (a wrong token)


class FakeGenius:
    def __init__(self, songs: list[FakeSong], faults: Faults | None = None) -> None:
        self.songs = songs
        self.faults = faults or Faults()
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def root(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def __enter__(self) -> "FakeGenius":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def searches(self) -> list[str]:
        return [r for r in self.requests if r.startswith("/api/search")]

    def _matches(self, query: str) -> list[FakeSong]:
        words = set(re.findall(r"\w+", query.lower()))
        scored = []
        for s in self.songs:
            title_words = set(re.findall(r"\w+", s.title.lower()))
            if title_words and title_words <= words:
                scored.append(s)
        return scored

    def _fault(self, query: str) -> tuple[int | None, float]:
        for title, n in list(self.faults.fail_first.items()):
            if title.lower() in query.lower() and n > 0:
                self.faults.fail_first[title] = n - 1
                return 500, 0.0
        for title in self.faults.always_fail:
            if title.lower() in query.lower():
                return 500, 0.0
        for title, seconds in self.faults.slow.items():
            if title.lower() in query.lower():
                return None, seconds
        return None, 0.0

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def _send(self, code: int, body: str, ctype: str) -> None:
                data = body.encode("utf-8")
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self) -> None:  # noqa: N802
                url = urlparse(self.path)
                with server._lock:
                    server.requests.append(self.path)
                query = parse_qs(url.query).get("q", [""])[0]
                if url.path in ("/api/search/multi", "/api/search"):
                    if server.faults.unauthorized:
                        self._send(401, json.dumps({"error": "invalid_token",
                                                    "error_description": "The access token provided is "
                                                                         "expired, revoked, malformed or invalid"}),
                                   "application/json")
                        return
                    code, delay = server._fault(query)
                    if delay:
                        time.sleep(delay)
                    if code:
                        self._send(code, json.dumps({"meta": {"status": code, "message": "Internal error"}}),
                                   "application/json")
                        return
                    hits = [s.hit() for s in server._matches(query)]
                    if url.path == "/api/search/multi":
                        sections = [{"type": "top_hit", "hits": hits[:1]}, {"type": "song", "hits": hits}]
                        sections += [{"type": t, "hits": []} for t in ("lyric", "artist", "album", "video",
                                                                       "article", "user")]
                        payload = {"meta": {"status": 200}, "response": {"sections": sections}}
                    else:
                        payload = {"meta": {"status": 200}, "response": {"hits": hits}}
                    self._send(200, json.dumps(payload), "application/json; charset=utf-8")
                    return
                for s in server.songs:
                    if url.path == s.path:
                        self._send(200, s.page(), "text/html; charset=utf-8")
                        return
                self._send(404, "<html><body>Page not found</body></html>", "text/html")

        return Handler
