"""Lyrics from Genius (through lyricsgenius), with a persistent cache.

:class:`GeniusClient` looks a song up by artist and title with the official API's
``/search``, keeps the first hit whose artist and title match, and scrapes the
lyrics from the song's page. It never raises for a network or site problem:
timeouts, HTTP errors, odd responses and missing songs all come back as a
:class:`LyricsResult` with ``lyrics=None`` and a ``status`` saying why. After
``max_failures`` errors in a row the client stops asking for the rest of the run
(the site is down; a library-wide run should not wait for a timeout per track),
and a token Genius rejects (HTTP 401/403) stops it at once. ``retries`` asks again,
after ``backoff`` seconds doubling each time, when a lookup fails.

Matching is one rule for every caller (the plugin and ``training/fetch_lyrics.py``):
the first hit whose title, without featured artists, bracketed notes and
"- Remastered" suffixes, equals the one asked for (ignoring case, accents and
punctuation), and whose artist matches; "One" never matches "One More Time".

Answers are cached in a small SQLite file (default: the user cache folder,
``platformdirs.user_cache_dir("mmgenre")``) so a rerun does not ask again: found
lyrics for good, "not on Genius" for ``negative_ttl`` seconds. Errors are never
cached. The cache is optional: if it cannot be opened the client works without.

``api_root`` / ``web_root`` point the client somewhere else than genius.com (a
proxy, or a local test server).
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .genius_page import PageDeadlineError

log = logging.getLogger(__name__)

CACHE_FILE = "genius-lyrics.sqlite3"
#: How long "this song is not on Genius" is remembered (30 days).
NEGATIVE_TTL = 30 * 24 * 3600.0

FOUND = "found"
CACHED = "cached"
NOT_FOUND = "not found"
ERROR = "error"
DISABLED = "disabled"


def default_cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("mmgenre"))


@dataclass(frozen=True)
class LyricsResult:
    lyrics: str | None
    status: str  # FOUND, CACHED, NOT_FOUND, ERROR or DISABLED
    url: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.lyrics)


# --------------------------------------------------------------------------- #
# Matching
# --------------------------------------------------------------------------- #

_FEAT = re.compile(r"\s*[\(\[]?\b(?:feat\.?|ft\.?|featuring)\s.*$", re.IGNORECASE)
_BRACKETS = re.compile(r"\s*[\(\[][^\)\]]*[\)\]]")
_SUFFIX = re.compile(r"\s+-\s+(?:.*\b(?:remaster(?:ed)?|live|version|edit|mix|mono|stereo)\b.*)$", re.IGNORECASE)
_NON_WORD = re.compile(r"[^\w]+")


def normalise(text: str | None) -> str:
    """Lower case, no accents, no punctuation, single spaces: for comparing names."""
    if not text:
        return ""
    text = unicodedata.normalize("NFKD", str(text))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = text.replace("&", " and ")
    return " ".join(_NON_WORD.sub(" ", text.casefold()).split())


def clean_title(title: str | None) -> str:
    """A title as Genius spells it: without "(feat. X)", "[Live]", " - Remastered 2011"."""
    title = (title or "").strip()
    stripped = _SUFFIX.sub("", _BRACKETS.sub("", _FEAT.sub("", title))).strip()
    return stripped or title


def clean_artist(artist: str | None) -> str:
    """The main artist: without "feat. X" / "ft. X"."""
    artist = (artist or "").strip()
    return _FEAT.sub("", artist).strip() or artist


def titles_match(wanted: str, found: str) -> bool:
    a, b = normalise(clean_title(wanted)), normalise(clean_title(found))
    return bool(a and b) and a == b


def artists_match(wanted: str, found: str) -> bool:
    a, b = normalise(clean_artist(wanted)), normalise(clean_artist(found))
    if not a or not b:
        return False
    return (a == b or a.replace(" ", "") == b.replace(" ", "")
            or f" {a} " in f" {b} " or f" {b} " in f" {a} ")


def _cache_key(artist: str, title: str) -> str:
    return f"{normalise(clean_artist(artist))}\x1f{normalise(clean_title(title))}"


# --------------------------------------------------------------------------- #
# Cache
# --------------------------------------------------------------------------- #


class LyricsCache:
    """A thread-safe SQLite table: (artist, title) -> lyrics or "not found"."""

    def __init__(self, path: str | os.PathLike, *, negative_ttl: float = NEGATIVE_TTL) -> None:
        self.path = Path(path)
        self.negative_ttl = negative_ttl
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), timeout=10, check_same_thread=False)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS lyrics (key TEXT PRIMARY KEY, lyrics TEXT, url TEXT, fetched REAL NOT NULL)"
        )
        self._db.commit()

    def get(self, artist: str, title: str) -> tuple[bool, str | None, str | None]:
        """(hit, lyrics, url); a hit with lyrics None means "known not to be on Genius"."""
        with self._lock:
            row = self._db.execute("SELECT lyrics, url, fetched FROM lyrics WHERE key = ?",
                                   (_cache_key(artist, title),)).fetchone()
        if row is None:
            return False, None, None
        lyrics, url, fetched = row
        if lyrics is None and time.time() - fetched > self.negative_ttl:
            return False, None, None
        return True, lyrics, url

    def put(self, artist: str, title: str, lyrics: str | None, url: str | None) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO lyrics (key, lyrics, url, fetched) VALUES (?, ?, ?, ?)",
                             (_cache_key(artist, title), lyrics, url, time.time()))
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()


# --------------------------------------------------------------------------- #
# HTTP with a deadline and a size cap
# --------------------------------------------------------------------------- #

#: The most bytes one Genius answer may have (a lyrics page is ~0.3-0.6 MB).
MAX_BODY_BYTES = 8 * 1024 * 1024


class BodyTooLargeError(IOError):
    """The server sent more than :data:`MAX_BODY_BYTES`."""


class DeadlineError(IOError):
    """A lookup took longer than its deadline (a slow or trickling server)."""


class CancelledError(IOError):
    """The lookup was cancelled (Ctrl-C, or the run is ending)."""


def _bounded_session_class():
    import requests

    class BoundedSession(requests.Session):
        """A requests session whose answers are read in chunks against a deadline and a size cap.

        requests' own ``timeout`` bounds each socket read, not the request: a server
        that sends a byte every few seconds never trips it, and a huge page is read
        whole into memory (and then parsed). Here every read waits at most until the
        deadline, and the body stops at ``max_bytes``.
        """

        def __init__(self, *, max_bytes: int = MAX_BODY_BYTES) -> None:
            super().__init__()
            self.max_bytes = max_bytes
            self.deadline: float | None = None  # time.monotonic() value, set per lookup
            self.cancelled = threading.Event()

        def _remaining(self) -> float:
            if self.cancelled.is_set():
                raise CancelledError("cancelled")
            if self.deadline is None:
                return 3600.0
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise DeadlineError("deadline passed")
            return left

        def request(self, method, url, **kwargs):  # type: ignore[override]
            left = self._remaining()
            timeout = kwargs.get("timeout")
            per_read = min(float(timeout), left) if isinstance(timeout, (int, float)) else left
            kwargs["timeout"] = (per_read, per_read)
            kwargs["stream"] = True
            response = super().request(method, url, **kwargs)
            try:
                chunks, size = [], 0
                raw = response.raw
                # read1: whatever one socket read brings (read(n) would wait for all n bytes,
                # which a trickling server makes take minutes between deadline checks).
                read = getattr(raw, "read1", None) or raw.read
                while True:
                    chunk = read(64 * 1024, decode_content=True)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise BodyTooLargeError(f"answer larger than {self.max_bytes // (1024 * 1024)} MB")
                    chunks.append(chunk)
                    _limit_next_read(response, self._remaining())
                response._content = b"".join(chunks)
            finally:
                response.close()
            return response

    return BoundedSession


def _limit_next_read(response: Any, seconds: float) -> None:
    """Make the response's next socket read wait at most ``seconds`` (best effort:
    reaches through urllib3 and http.client; without it a read waits the request's timeout)."""
    try:
        sock = response.raw._fp.fp.raw._sock
        sock.settimeout(max(0.05, min(seconds, sock.gettimeout() or seconds)))
    except AttributeError:
        pass


# --------------------------------------------------------------------------- #
# Client
# --------------------------------------------------------------------------- #


class GeniusClient:
    """Fetches lyrics from Genius; every failure is a result, never an exception.

    Parameters
    ----------
    token : a Genius API client access token (https://genius.com/api-clients).
    timeout : seconds for each lookup (search and page together).
    cache_dir : folder of the cache file; None: the user cache folder; False: no cache.
    cache : an open :class:`LyricsCache` to use instead (``cache_dir`` is then ignored).
    api_root, web_root : base URLs of the API (``/search``) and the song pages.
    max_failures : failed lookups in a row after which the client gives up for this run.
    retries : further attempts of a failed lookup (timeouts, HTTP and connection errors).
    backoff : seconds before the first retry; doubles with each one.
    sleep_time : pause after each request (politeness towards the site).
    warn, debug : called with each formatted warning / debug message (default: this module's logger).
    """

    def __init__(self, token: str, *, timeout: float = 10.0, cache_dir: str | os.PathLike | None | bool = None,
                 api_root: str | None = None, web_root: str | None = None, max_failures: int = 3,
                 sleep_time: float = 0.0, negative_ttl: float = NEGATIVE_TTL, retries: int = 0,
                 backoff: float = 1.0, cache: LyricsCache | None = None,
                 warn: Callable[[str], None] | None = None, debug: Callable[[str], None] | None = None) -> None:
        if not token or not isinstance(token, str):
            raise ValueError("a Genius access token is needed")
        self.token = token
        self.timeout = float(timeout)
        self.api_root = _with_slash(api_root) if api_root else None
        self.web_root = _with_slash(web_root) if web_root else None
        self.max_failures = max(1, int(max_failures))
        self.sleep_time = float(sleep_time)
        self.retries = max(0, int(retries))
        self.backoff = max(0.0, float(backoff))
        self.token_rejected = False
        self._warn = warn or (lambda message: log.warning("%s", message))
        self._debug = debug or (lambda message: log.debug("%s", message))
        self.failures = 0
        self.disabled_reason: str | None = None
        self.requests = 0  # HTTP lookups made (not cache hits), for tests and stats
        self._lock = threading.Lock()
        self._genius = None
        self._session = _bounded_session_class()()
        self.cache: LyricsCache | None = cache
        if cache is None and cache_dir is not False:
            folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
            try:
                self.cache = LyricsCache(folder / CACHE_FILE, negative_ttl=negative_ttl)
            except (OSError, sqlite3.Error) as exc:
                self._warn(f"Genius cache in {folder} unusable, going on without: {exc}")

    # The genius object (and its imports of requests / bs4) only when first needed.
    def _client(self):
        if self._genius is None:
            from lyricsgenius import Genius

            genius = Genius(self.token, timeout=self.timeout, sleep_time=self.sleep_time, retries=0,
                            remove_section_headers=True, skip_non_songs=True)
            bounded = self._session
            bounded.headers.update(genius._session.headers)
            bounded.proxies = genius._session.proxies
            genius._session.close()
            genius._session = bounded
            if self.api_root:
                genius.API_ROOT = self.api_root
            if self.web_root:
                genius.WEB_ROOT = self.web_root
                genius.PUBLIC_API_ROOT = self.web_root + "api/"
            self._genius = genius
        return self._genius

    @property
    def disabled(self) -> bool:
        return self.disabled_reason is not None

    def cancel(self) -> None:
        """Stop at once: a lookup under way ends at its next read, later ones are not made."""
        self._session.cancelled.set()
        self.disabled_reason = self.disabled_reason or "cancelled"

    def fetch(self, artist: str | None, title: str | None) -> LyricsResult:
        """Lyrics of ``title`` by ``artist``, from the cache or Genius."""
        artist, title = (artist or "").strip(), (title or "").strip()
        if not artist or not title:
            return LyricsResult(None, NOT_FOUND, error="no artist or title to search for")
        if self.cache is not None:
            try:
                hit, lyrics, url = self.cache.get(artist, title)
            except sqlite3.Error as exc:
                self._debug(f"Genius cache read failed: {exc}")
                hit = False
            if hit:
                return LyricsResult(lyrics, CACHED if lyrics else NOT_FOUND, url)
        if self.disabled:
            return LyricsResult(None, DISABLED, error=self.disabled_reason)
        with self._lock:
            for attempt in range(self.retries + 1):  # the last attempt returns from its except
                self.requests += 1
                # One deadline for the whole lookup (search and page together).
                self._session.deadline = time.monotonic() + self.timeout
                try:
                    lyrics, url = self._lookup(artist, title)
                    break
                except Exception as exc:  # requests, lyricsgenius and bs4 raise many kinds
                    if self._session.cancelled.is_set():
                        return LyricsResult(None, DISABLED, error="cancelled")
                    if _http_status(exc) in (401, 403) or attempt == self.retries:
                        return self._failed(artist, title, exc)
                    self._debug(f"Genius lookup of {artist} - {title} failed ({_describe(exc, self.timeout)}), "
                                f"asking again ({attempt + 1} of {self.retries})")
                finally:
                    self._session.deadline = None
                # A cancel (Ctrl-C) ends the wait at once.
                if self._session.cancelled.wait(self.backoff * 2 ** attempt):
                    return LyricsResult(None, DISABLED, error="cancelled")
            self.failures = 0
        if self.cache is not None:
            try:
                self.cache.put(artist, title, lyrics, url)
            except sqlite3.Error as exc:
                self._debug(f"Genius cache write failed: {exc}")
        return LyricsResult(lyrics, FOUND if lyrics else NOT_FOUND, url)

    def _lookup(self, artist: str, title: str) -> tuple[str | None, str | None]:
        genius = self._client()
        response = genius.search_songs(f"{clean_title(title)} {clean_artist(artist)}", per_page=10)
        if not isinstance(response, dict):
            raise ValueError(f"unexpected search response: {type(response).__name__}")
        for hit in response.get("hits") or []:
            if hit.get("type", "song") != "song":
                continue
            song = hit.get("result") or {}
            found_artist = (song.get("primary_artist") or {}).get("name") or song.get("artist_names") or ""
            if not (titles_match(title, song.get("title") or "") and artists_match(artist, found_artist)):
                continue
            if song.get("instrumental") or song.get("lyrics_state", "complete") != "complete":
                return None, song.get("url")
            path = song.get("path") or urlparse(song.get("url") or "").path
            if not path:
                continue
            lyrics = self._page_lyrics(path)
            return lyrics or None, song.get("url")
        return None, None

    def _page_lyrics(self, path: str) -> str | None:
        """The lyrics on the song page at ``path`` (under ``web_root``), read and parsed
        within the lookup's deadline (:mod:`.genius_page`; lyricsgenius' own parser has
        no deadline and took minutes on a hostile page)."""
        from .genius_page import lyrics_from_page

        url = (self.web_root or "https://genius.com/") + path.lstrip("/")
        response = self._session.get(url, timeout=self.timeout)
        # Not response.text: without a charset it guesses one from all the bytes (slow on a big page).
        try:
            page = response.content.decode(response.encoding or "utf-8", errors="replace")
        except LookupError:  # a charset Python does not know
            page = response.content.decode("utf-8", errors="replace")
        lyrics = lyrics_from_page(page, deadline=self._session.deadline)
        return lyrics.strip() if lyrics else None

    def _failed(self, artist: str, title: str, exc: BaseException) -> LyricsResult:
        message = _describe(exc, self.timeout)
        self.failures += 1
        if _http_status(exc) in (401, 403):
            # Every further lookup would be refused the same way.
            self.token_rejected = True
            self.disabled_reason = f"Genius rejected the access token ({message})"
            self._warn(f"not asking Genius again in this run: {self.disabled_reason}")
            return LyricsResult(None, ERROR, error=message)
        self._warn(f"Genius lookup of {artist} - {title} failed: {message}")
        if self.failures >= self.max_failures:
            self.disabled_reason = f"{self.failures} Genius errors in a row (last: {message})"
            self._warn(f"not asking Genius again in this run: {self.disabled_reason}")
        return LyricsResult(None, ERROR, error=message)

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
            self.cache = None
        self._session.close()


def _with_slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


_STATUS = re.compile(r"status code:?\s*(\d{3})", re.IGNORECASE)


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status of a failed request, from the response or lyricsgenius' message."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status:
        return int(status)
    match = _STATUS.search(str(exc))
    return int(match.group(1)) if match else None


def _describe(exc: BaseException, timeout: float | None = None) -> str:
    """A one-line reason: "timed out after 10 s", "HTTP 500", "ConnectionError: ..."."""
    name = type(exc).__name__
    text = " ".join(str(exc).split())
    # lyricsgenius wraps errors (a raised error inside a Timeout or AssertionError):
    # the root cause names what happened.
    cause: BaseException | None = exc
    for _ in range(8):
        if cause is None:
            break
        if isinstance(cause, BodyTooLargeError):
            return str(cause)
        if isinstance(cause, (DeadlineError, PageDeadlineError)):
            return f"no complete answer within {timeout:g} s" if timeout else "too slow"
        cause = cause.__cause__ or cause.__context__
    if "timed out" in text.lower() or "timeout" in name.lower():
        return f"timed out after {timeout:g} s" if timeout else "timed out"
    status = _http_status(exc)
    if status:
        return f"HTTP {status}"
    if len(text) > 200:
        text = text[:200] + "..."
    return f"{name}: {text}" if text else name


__all__ = ["GeniusClient", "LyricsCache", "LyricsResult", "default_cache_dir", "normalise", "clean_title",
           "clean_artist", "titles_match", "artists_match", "FOUND", "CACHED", "NOT_FOUND", "ERROR", "DISABLED"]
