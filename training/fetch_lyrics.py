"""Fetch lyrics for a dataset's tracks from Genius (lyricsgenius), resumably.

    export GENIUS_ACCESS_TOKEN=...        # https://genius.com/api-clients
    python training/fetch_lyrics.py --config training/configs/fma_medium.json --out data/fma_lyrics.jsonl
    python training/fetch_lyrics.py --data manifest:tracks.csv --out lyrics.jsonl --sleep 1.0

Every track with an artist and a title (FMA: ``('artist', 'name')`` and
``('track', 'title')``; manifests: artist/title columns; folders: the files' tags) is
searched on Genius; the song page is scraped for its lyrics. Results -- found, not
found, failed -- go to a JSON-lines cache (``--cache``, default ``OUT.cache.jsonl``)
as soon as they arrive, so an interrupted run loses nothing and a rerun asks Genius
only for what is missing: tracks never tried, tracks whose request failed, and
"not found" tracks older than ``--retry-missing-days``.

Politeness and robustness: ``--sleep`` seconds between requests (rate limit),
``--retries`` attempts with exponential backoff on timeouts, connection errors and
HTTP errors; every failure is logged and never stops the run. A progress bar runs
while fetching and a summary line ends it. ``--out`` gets one record per track with
lyrics: ``track_id`` (FMA) or ``path``, ``key``, artist, title, genre, lyrics, url --
the format ``data.lyrics`` of a training config reads.

``--api-root URL`` (or the environment variable ``GENIUS_API_ROOT``) points every
Genius endpoint at another server (``URL/api/...`` for the APIs, ``URL/<song path>``
for song pages): the tests run it against a local server that answers like Genius.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmgenre_core.storage import atomic_write  # noqa: E402 - after the sys.path fix above

log = logging.getLogger("training.fetch_lyrics")

DEFAULT_TOKEN_ENV = "GENIUS_ACCESS_TOKEN"


# --------------------------------------------------------------------------- #
# Cache
# --------------------------------------------------------------------------- #


class LyricsCache:
    """Append-only JSON-lines cache keyed by track; the last record of a key wins."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            with open(self.path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut short by an interruption
                    if isinstance(rec, dict) and "key" in rec:
                        self.records[rec["key"]] = rec
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def put(self, record: dict[str, Any]) -> None:
        self.records[record["key"]] = record
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "LyricsCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def needs_fetch(record: dict[str, Any] | None, *, retry_missing_days: float, now: float | None = None) -> bool:
    """Retry policy: never tried or failed -> fetch; found -> never; not found -> after N days."""
    if record is None or record.get("status") == "error":
        return True
    if record.get("status") == "missing":
        age_days = ((now or time.time()) - float(record.get("time", 0))) / 86400
        return age_days >= retry_missing_days
    return False


# --------------------------------------------------------------------------- #
# Genius
# --------------------------------------------------------------------------- #


def _clean(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"\(.*?\)|\[.*?\]", " ", text)  # "(Remastered)", "[feat. X]"
    return re.sub(r"[^\w]+", " ", text).strip()


def titles_match(wanted: str, found: str) -> bool:
    """Same song title, ignoring case, punctuation and bracketed notes; or one contains the other."""
    a, b = _clean(wanted), _clean(found)
    return bool(a and b) and (a == b or a in b or b in a)


@dataclass
class FetchResult:
    status: str  # found | missing | error
    lyrics: str | None = None
    url: str | None = None
    error: str | None = None


class TokenRejected(RuntimeError):
    """Genius answered 401/403: the access token is wrong; asking again cannot help."""


def describe_error(exc: BaseException) -> tuple[str, int | None]:
    """A short description of a failed request and its HTTP status, when there is one."""
    text = str(exc)
    status = getattr(getattr(exc, "response", None), "status_code", None)
    match = re.search(r"status code:? (\d{3})", text)
    if status is None and match:
        status = int(match.group(1))
    if status is not None:
        return f"HTTP {status}", int(status)
    first = text.splitlines()[0][:160] if text else ""
    return f"{type(exc).__name__}: {first}".rstrip(": "), None


class GeniusFetcher:
    """lyricsgenius with an overridable API root, retries with backoff, and a title check."""

    def __init__(self, token: str, *, api_root: str | None = None, timeout: float = 10.0, retries: int = 3,
                 sleep: float = 0.5, backoff: float = 2.0, strict_title: bool = True) -> None:
        import lyricsgenius

        self.genius = lyricsgenius.Genius(token, timeout=timeout, sleep_time=sleep, retries=0,
                                          remove_section_headers=False, skip_non_songs=True)
        if api_root:
            root = api_root.rstrip("/") + "/"
            # Sender's class attributes, shadowed on this instance: developer API
            # (api.genius.com), public API (genius.com/api) and web pages (genius.com).
            self.genius.API_ROOT = root + "api/"
            self.genius.PUBLIC_API_ROOT = root + "api/"
            self.genius.WEB_ROOT = root
        self.retries = max(0, retries)
        self.backoff = backoff
        self.strict_title = strict_title
        self.requests_failed = 0

    def fetch(self, artist: str, title: str) -> FetchResult:
        last_error = "unknown error"
        for attempt in range(self.retries + 1):
            try:
                song = self.genius.search_song(title, artist, get_full_info=False)
            except Exception as exc:  # noqa: BLE001 - requests, JSON and lyricsgenius errors alike
                self.requests_failed += 1
                last_error, status = describe_error(exc)
                if status in (401, 403):
                    raise TokenRejected(f"Genius rejected the access token ({last_error})") from exc
                log.warning("genius: %s - %s: %s (attempt %d of %d)", artist, title, last_error, attempt + 1,
                            self.retries + 1)
                if attempt < self.retries:
                    time.sleep(self.backoff * 2 ** attempt)
                continue
            if song is None or not (song.lyrics or "").strip():
                return FetchResult("missing")
            if self.strict_title and not titles_match(title, song.title):
                log.info("genius: %s - %s: best hit is %r, not the same song", artist, title, song.title)
                return FetchResult("missing", url=song.url)
            return FetchResult("found", lyrics=song.lyrics, url=song.url)
        return FetchResult("error", error=last_error)


# --------------------------------------------------------------------------- #
# Tracks and the run
# --------------------------------------------------------------------------- #


def load_tracks(config: str | None, overrides: Sequence[str], data_specs: Sequence[str]):
    """Audio examples of a training config or of ``--data`` specs (lyrics sources ignored)."""
    from training.config import load_config
    from training.datasets import load_examples, parse_source_spec

    if data_specs:
        specs = [parse_source_spec(s) for s in data_specs]
    else:
        cfg = load_config(config, overrides)
        specs = list(cfg.data.audio)
    examples, _ = load_examples([s for s in specs if s.get("type") != "jsonl"])
    return examples


def fetch_all(tracks: Iterable, fetcher: GeniusFetcher | None, cache: LyricsCache, *,
              retry_missing_days: float = 30.0, limit: int | None = None, progress: bool = True) -> dict[str, int]:
    """Fetch what the cache lacks; returns counts for the summary."""
    from tqdm import tqdm

    tracks = list(tracks)
    usable = [t for t in tracks if t.artist and t.title]
    todo = [t for t in usable if needs_fetch(cache.get(t.key), retry_missing_days=retry_missing_days)]
    counts = {"tracks": len(tracks), "without_artist_or_title": len(tracks) - len(usable),
              "from_cache": len(usable) - len(todo), "asked": 0, "found_now": 0, "missing_now": 0, "errors_now": 0,
              "left_for_later": 0}
    if limit is not None:
        counts["left_for_later"] = max(0, len(todo) - limit)
        todo = todo[:limit]
    if todo and fetcher is None:
        raise RuntimeError("tracks need fetching but there is no Genius client (no token?)")
    bar = tqdm(todo, unit="track", desc="genius", disable=not progress, dynamic_ncols=True)
    for t in bar:
        res = fetcher.fetch(t.artist, t.title)
        counts["asked"] += 1
        counts[{"found": "found_now", "missing": "missing_now", "error": "errors_now"}[res.status]] += 1
        cache.put({"key": t.key, "artist": t.artist, "title": t.title, "status": res.status,
                   "lyrics": res.lyrics, "url": res.url, "error": res.error, "time": time.time()})
        bar.set_postfix(found=counts["found_now"], missing=counts["missing_now"], errors=counts["errors_now"])
    bar.close()
    counts["with_lyrics"] = sum(1 for t in usable if (cache.get(t.key) or {}).get("status") == "found")
    return counts


def write_output(tracks: Iterable, cache: LyricsCache, out: str | os.PathLike) -> int:
    """One JSON line per track with lyrics (the format training's ``data.lyrics`` reads)."""
    n = 0
    with atomic_write(out, text=True) as fh:
        for t in tracks:
            rec = cache.get(t.key)
            if not rec or rec.get("status") != "found":
                continue
            row: dict[str, Any] = {"key": t.key}
            if t.track_id is not None:
                row["track_id"] = t.track_id
            if t.path:
                row["path"] = t.path
            row.update({"artist": t.artist, "title": t.title, "genre": t.genre, "lyrics": rec["lyrics"],
                        "source": "genius", "url": rec.get("url")})
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def summary_line(counts: dict[str, int]) -> str:
    return (f"lyrics for {counts['with_lyrics']} of {counts['tracks']} tracks "
            f"({counts['from_cache']} from the cache, {counts['asked']} asked now: {counts['found_now']} found, "
            f"{counts['missing_now']} not found, {counts['errors_now']} failed; "
            f"{counts['without_artist_or_title']} without artist or title"
            + (f"; {counts['left_for_later']} left for a later run" if counts.get("left_for_later") else "") + ")")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Fetch lyrics for a dataset's tracks from Genius (resumable).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="training config: its data.audio sources")
    src.add_argument("--data", action="append", metavar="SPEC", help="folder:DIR | manifest:CSV | fma:DIR,audio_dir=D")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", required=True, metavar="LYRICS.jsonl")
    p.add_argument("--cache", metavar="FILE.jsonl", help="default: OUT.cache.jsonl")
    p.add_argument("--token-env", default=DEFAULT_TOKEN_ENV,
                   help=f"environment variable with the token ({DEFAULT_TOKEN_ENV})")
    p.add_argument("--api-root", default=os.environ.get("GENIUS_API_ROOT"), help="Genius base URL (tests)")
    p.add_argument("--sleep", type=float, default=0.5, help="seconds between requests (rate limit)")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--retries", type=int, default=3)
    p.add_argument("--backoff", type=float, default=2.0, help="first retry delay in seconds (doubles)")
    p.add_argument("--retry-missing-days", type=float, default=30.0, help="ask again for 'not found' after N days")
    p.add_argument("--limit", type=int, help="ask for at most N tracks this run")
    p.add_argument("--no-strict-title", action="store_true", help="accept Genius's best hit even if the title differs")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("lyricsgenius").setLevel(logging.ERROR)
    from mmgenre_core.errors import MMGenreError

    try:
        tracks = load_tracks(args.config, args.overrides, args.data or [])
    except MMGenreError as exc:
        print(f"fetch_lyrics.py: {exc}", file=sys.stderr)
        return 2
    cache_path = args.cache or f"{args.out}.cache.jsonl"
    with LyricsCache(cache_path) as cache:
        pending = [t for t in tracks if t.artist and t.title
                   and needs_fetch(cache.get(t.key), retry_missing_days=args.retry_missing_days)]
        fetcher = None
        if pending:
            token = os.environ.get(args.token_env)
            if not token:
                print(f"fetch_lyrics.py: {len(pending)} tracks to fetch, but ${args.token_env} is not set "
                      f"(a Genius API client access token)", file=sys.stderr)
                return 2
            fetcher = GeniusFetcher(token, api_root=args.api_root, timeout=args.timeout, retries=args.retries,
                                    sleep=args.sleep, backoff=args.backoff, strict_title=not args.no_strict_title)
        try:
            counts = fetch_all(tracks, fetcher, cache, retry_missing_days=args.retry_missing_days,
                               limit=args.limit, progress=not args.no_progress)
        except TokenRejected as exc:
            print(f"fetch_lyrics.py: {exc}; check ${args.token_env}", file=sys.stderr)
            return 2
        written = write_output(tracks, cache, args.out)
    print(summary_line(counts))
    print(f"{written} records written to {args.out}")
    return 0


__all__ = ["LyricsCache", "GeniusFetcher", "TokenRejected", "describe_error", "FetchResult", "needs_fetch",
           "titles_match", "fetch_all",
           "write_output", "summary_line", "load_tracks", "main"]

if __name__ == "__main__":
    sys.exit(main())
