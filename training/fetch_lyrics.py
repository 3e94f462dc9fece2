"""Fetch lyrics for a dataset's tracks from Genius, resumably: a thin command over
:class:`mmgenre_core.genius.GeniusClient`, the client the beets plugin uses.

    export GENIUS_ACCESS_TOKEN=...        # https://genius.com/api-clients
    python training/fetch_lyrics.py --config training/configs/fma_medium.json --out data/fma_lyrics.jsonl
    python training/fetch_lyrics.py --data manifest:tracks.csv --out lyrics.jsonl --sleep 1.0

Every track with an artist and a title (FMA: ``('artist', 'name')`` and
``('track', 'title')``; manifests: artist/title columns; folders: the files' tags) is
looked up with the client's one matching rule (same title without featured artists,
bracketed notes and "- Remastered" suffixes; same artist). Answers go to the client's
SQLite cache (``--cache-dir``, default the user cache folder the plugin also uses) as
soon as they arrive, so an interrupted run loses nothing and a rerun asks Genius only
for what is missing: tracks never tried, tracks whose lookup failed, and "not found"
tracks older than ``--retry-missing-days``.

Politeness and robustness: ``--sleep`` seconds after each request, ``--retries``
attempts with exponential backoff; every failure is logged and never stops the run,
except a token Genius rejects (exit 2). A progress bar runs while fetching and a
summary line ends it. ``--out`` gets one record per track with lyrics: ``track_id``
(FMA) or ``path``, ``key``, artist, title, genre, lyrics, url -- the format
``data.lyrics`` of a training config reads.

``--api-root URL`` (or the environment variable ``GENIUS_API_ROOT``) points every
Genius endpoint at another server (``URL/api/search`` for the search API, ``URL/<song
path>`` for song pages): the tests run it against a local server that answers like Genius.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmgenre_core.genius import (  # noqa: E402 - after the sys.path fix above
    CACHE_FILE, DISABLED, ERROR, FOUND, GeniusClient, LyricsCache, default_cache_dir)
from mmgenre_core.storage import atomic_write  # noqa: E402

log = logging.getLogger("training.fetch_lyrics")

DEFAULT_TOKEN_ENV = "GENIUS_ACCESS_TOKEN"


def open_cache(cache_dir: str | os.PathLike | None, *, retry_missing_days: float) -> LyricsCache:
    """The Genius cache in ``cache_dir`` (default: the user cache folder shared with the plugin)."""
    folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    return LyricsCache(folder / CACHE_FILE, negative_ttl=retry_missing_days * 86400.0)


def is_known(cache: LyricsCache, track: Any) -> bool:
    """Whether the cache answers for this track (found, or "not found" still fresh)."""
    return cache.get(track.artist, track.title)[0]


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


def fetch_all(tracks: Iterable, client: GeniusClient | None, cache: LyricsCache, *,
              limit: int | None = None, progress: bool = True) -> dict[str, int]:
    """Ask Genius for what the cache does not know; returns counts for the summary.

    Stops early (the rest is "left for later") when the client gives up: a rejected
    token or ``max_failures`` failed lookups in a row.
    """
    from tqdm import tqdm

    tracks = list(tracks)
    usable = [t for t in tracks if t.artist and t.title]
    todo = [t for t in usable if not is_known(cache, t)]
    counts = {"tracks": len(tracks), "without_artist_or_title": len(tracks) - len(usable),
              "from_cache": len(usable) - len(todo), "asked": 0, "found_now": 0, "missing_now": 0, "errors_now": 0,
              "left_for_later": 0}
    if limit is not None:
        counts["left_for_later"] = max(0, len(todo) - limit)
        todo = todo[:limit]
    if todo and client is None:
        raise RuntimeError("tracks need fetching but there is no Genius client (no token?)")
    bar = tqdm(todo, unit="track", desc="genius", disable=not progress, dynamic_ncols=True)
    for done, t in enumerate(bar):
        res = client.fetch(t.artist, t.title)
        if res.status == DISABLED:
            counts["left_for_later"] += len(todo) - done
            break
        counts["asked"] += 1
        counts["found_now" if res.status == FOUND else "errors_now" if res.status == ERROR else "missing_now"] += 1
        bar.set_postfix(found=counts["found_now"], missing=counts["missing_now"], errors=counts["errors_now"])
    bar.close()
    counts["with_lyrics"] = sum(1 for t in usable if cache.get(t.artist, t.title)[1])
    return counts


def write_output(tracks: Iterable, cache: LyricsCache, out: str | os.PathLike) -> int:
    """One JSON line per track with lyrics (the format training's ``data.lyrics`` reads)."""
    n = 0
    with atomic_write(out, text=True) as fh:
        for t in tracks:
            if not (t.artist and t.title):
                continue
            _, lyrics, url = cache.get(t.artist, t.title)
            if not lyrics:
                continue
            row: dict[str, Any] = {"key": t.key}
            if t.track_id is not None:
                row["track_id"] = t.track_id
            if t.path:
                row["path"] = t.path
            row.update({"artist": t.artist, "title": t.title, "genre": t.genre, "lyrics": lyrics,
                        "source": "genius", "url": url})
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
    p.add_argument("--cache-dir", metavar="DIR",
                   help="folder of the Genius cache (default: the user cache folder, shared with the plugin)")
    p.add_argument("--token-env", default=DEFAULT_TOKEN_ENV,
                   help=f"environment variable with the token ({DEFAULT_TOKEN_ENV})")
    p.add_argument("--api-root", default=os.environ.get("GENIUS_API_ROOT"), help="Genius base URL (tests)")
    p.add_argument("--sleep", type=float, default=0.5, help="seconds after each request (rate limit)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per lookup (search and page)")
    p.add_argument("--retries", type=int, default=3)
    p.add_argument("--backoff", type=float, default=2.0, help="first retry delay in seconds (doubles)")
    p.add_argument("--max-failures", type=int, default=10,
                   help="failed lookups in a row (after retries) after which the run stops asking")
    p.add_argument("--retry-missing-days", type=float, default=30.0, help="ask again for 'not found' after N days")
    p.add_argument("--limit", type=int, help="ask for at most N tracks this run")
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
    cache = open_cache(args.cache_dir, retry_missing_days=args.retry_missing_days)
    client = None
    try:
        pending = [t for t in tracks if t.artist and t.title and not is_known(cache, t)]
        if pending:
            token = os.environ.get(args.token_env)
            if not token:
                print(f"fetch_lyrics.py: {len(pending)} tracks to fetch, but ${args.token_env} is not set "
                      f"(a Genius API client access token)", file=sys.stderr)
                return 2
            root = args.api_root.rstrip("/") + "/" if args.api_root else None
            client = GeniusClient(token, cache=cache, timeout=args.timeout, sleep_time=args.sleep,
                                  retries=args.retries, backoff=args.backoff, max_failures=args.max_failures,
                                  api_root=root + "api/" if root else None, web_root=root)
        counts = fetch_all(tracks, client, cache, limit=args.limit, progress=not args.no_progress)
        if client is not None and client.token_rejected:
            print(f"fetch_lyrics.py: {client.disabled_reason}; check ${args.token_env}", file=sys.stderr)
            return 2
        written = write_output(tracks, cache, args.out)
    finally:
        if client is not None:
            client.close()  # closes the cache too
        else:
            cache.close()
    print(summary_line(counts))
    print(f"{written} records written to {args.out}")
    return 0


__all__ = ["open_cache", "is_known", "fetch_all", "write_output", "summary_line", "load_tracks", "main"]

if __name__ == "__main__":
    sys.exit(main())
