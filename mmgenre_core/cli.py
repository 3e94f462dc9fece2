"""Command line: ``mmgenre predict``, ``mmgenre info`` and ``mmgenre cache``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .bounded_read import human_bytes
from .listening import DEFAULT_PLAN, PLAN_NAMES

log = logging.getLogger("mmgenre")


def display_text(text: str | os.PathLike | bytes | None) -> str:
    """``text`` (a path or a message holding paths) as printable UTF-8.

    File names that are not valid UTF-8 reach Python as lone surrogates
    (``\udcff``), which cannot be printed or put in JSON; their bytes are shown as
    ``\xff`` escapes instead. The one encoder for every line the CLI prints.
    """
    if text is None:
        return ""
    if isinstance(text, os.PathLike):
        text = os.fspath(text)
    raw = text if isinstance(text, bytes) else str(text).encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "backslashreplace")


def _result_for_output(res: Any) -> dict[str, Any]:
    out = res.to_dict()
    out["path"] = display_text(out["path"]) if out["path"] is not None else None
    if out.get("error"):
        out["error"] = display_text(out["error"])
    return out


def _cmd_predict(args: argparse.Namespace) -> int:
    from .audio import find_audio_files
    from .predict import GenreClassifier

    if args.attention and not args.json:
        print("mmgenre: --attention needs --json (the attention weights are part of the JSON output)",
              file=sys.stderr)
        return 2
    try:
        files = find_audio_files(args.paths)
    except (FileNotFoundError, OSError) as exc:
        print(f"mmgenre: {display_text(str(exc))}", file=sys.stderr)
        return 2
    if not files:
        print("mmgenre: no audio files found", file=sys.stderr)
        return 2
    paths = [os.path.abspath(f) for f in files]
    given = None
    if args.lyrics_file:
        from .lyrics_file import command_line_folders, read_lyrics_file

        given = read_lyrics_file(args.lyrics_file)
        given.resolve(command_line_folders(args.paths))
        given.report_unmatched(paths)
    from .tags import read_embedded_lyrics

    def lyrics(path: str) -> tuple[str | None, str]:
        """--lyrics-file first ("file"), else the lyrics in the file's tags ("tag")."""
        text = given.lookup(path) if given is not None else None
        return (text, "file") if text is not None else (read_embedded_lyrics(path), "tag")

    from .device import configure_cpu_threads

    threads = configure_cpu_threads(args.threads, device=args.device)
    if threads is not None:
        log.info("%d CPU thread(s) for the model", threads)
    cache = _open_cache(args)
    clf = GenreClassifier.load(args.model, device=args.device, feature_cache=cache)
    started = time.perf_counter()
    from .native_stderr import filtered_native_stderr

    with filtered_native_stderr():
        n_failed = _print_predictions(clf, paths, lyrics, args)
    elapsed = time.perf_counter() - started
    log.info("%d tracks in %.1f s (%.1f tracks/s), %d failed", len(paths), elapsed,
             len(paths) / max(elapsed, 1e-9), n_failed)
    if cache is not None:
        log.info("feature cache %s: %d hits, %d computed, %d stored", display_text(str(cache.path)),
                 cache.hits, cache.misses, cache.writes)
        cache.close()
    return 1 if n_failed else 0


def _open_cache(args: argparse.Namespace) -> Any:
    """The feature cache the options ask for (None with ``--no-cache``)."""
    if getattr(args, "no_cache", False):
        return None
    from .feature_cache import FeatureCache, default_cache_path

    return FeatureCache(args.cache or default_cache_path(), identity=getattr(args, "cache_identity", "stat"))


def _cmd_cache(args: argparse.Namespace) -> int:
    from .feature_cache import FeatureCache, default_cache_path

    path = Path(args.cache or default_cache_path())
    if args.action == "stats" and not path.exists():
        print(f"feature cache: {display_text(str(path))} (none yet)")
        return 0
    cache = FeatureCache(path)
    if not cache.enabled:
        print(f"mmgenre: the feature cache {display_text(str(path))} cannot be opened (see the warning above)",
              file=sys.stderr)
        return 2
    try:
        if args.action == "stats":
            st = cache.stats(check_files=not args.quick)
            print(f"feature cache: {display_text(st.path)}")
            print(f"size:          {human_bytes(st.bytes_on_disk)}")
            print(f"entries:       {st.entries}" + ("" if st.stale is None else
                                                     f" ({st.stale} of files since changed or gone)"))
            for backbone, (n, windows) in sorted(st.backbones.items()):
                print(f"  backbone {backbone}: {n} files, {windows} window slots")
        elif args.action == "prune":
            keep = None
            if args.other_backbones:
                from .predict import GenreClassifier

                keep = [GenreClassifier.load(args.model, device="cpu").backbone_id]
            before = cache.bytes_on_disk()
            removed = cache.prune(keep_backbones=keep)
            print(f"pruned {removed} entries; {human_bytes(before)} -> {human_bytes(cache.bytes_on_disk())}")
        else:
            removed = cache.clear()
            print(f"cleared {removed} entries; now {human_bytes(cache.bytes_on_disk())}")
    finally:
        cache.close()
    return 0


def _print_predictions(clf: Any, paths: list[str], lyrics: Any, args: argparse.Namespace) -> int:
    """Print one line (or JSON object) per track as it is classified; returns the failures."""
    n_failed = 0
    for res in clf.iter_predict(paths, lyrics=lyrics, use_lyrics=not args.no_lyrics,
                                batch_size=args.batch_size, top_k=args.top_k,
                                return_attention=args.attention, listen=args.listen):
        if res.error:
            n_failed += 1
        if args.json:
            print(json.dumps(_result_for_output(res), ensure_ascii=False), flush=True)
        elif res.error:
            print(f"{display_text(res.path)}: ERROR {display_text(res.error)}", flush=True)
        else:
            genres = ", ".join(f"{g.genre} ({g.confidence:.2f})" for g in res.genres)
            heard = f", {res.windows} windows" if res.windows else ""
            unlike = ", unlike the genres the model knows" if res.unfamiliar else ""
            print(f"{display_text(res.path)}: {genres}  [lyrics: {res.lyrics}{heard}{unlike}]", flush=True)
    return n_failed


def _cmd_info(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint
    from .predict import default_model_path

    path = args.model or default_model_path()
    ckpt = load_checkpoint(path)
    if args.json:
        print(json.dumps({"path": str(path), "model_id": ckpt.model_id, "genres": ckpt.genres,
                          "model_config": ckpt.model_config.to_dict(), "audio_config": ckpt.audio_config.to_dict(),
                          "text_config": ckpt.text_config.to_dict(), "vocab_size": len(ckpt.vocab),
                          "metadata": ckpt.metadata, "metrics": ckpt.metrics}, indent=2, default=str))
        return 0
    mc = ckpt.model_config
    n_params = sum(t.numel() for t in ckpt.state_dict.values())
    print(f"model:    {ckpt.model_id}  ({path})")
    print(f"genres:   {', '.join(ckpt.genres)}")
    audio = ("audio musicnn (MSD-pretrained, " + ("fine-tuned" if mc.musicnn_finetune else "frozen")
             + f", {mc.musicnn_features} features)") if mc.audio_branch == "musicnn" else "audio CNN (paper)"
    lyrics = "lyrics HAN" + (" + TF-IDF bag of words" if mc.lyrics_bow else "")
    branches = [b for b, on in ((audio, mc.use_audio), (lyrics, mc.use_lyrics)) if on]
    print(f"branches: {' + '.join(branches)}; {n_params / 1e6:.2f} M parameters; vocabulary {len(ckpt.vocab)} words")
    from .feature_cache import bytes_on_disk, default_cache_path

    cache_path = default_cache_path()
    if cache_path.exists():
        print(f"cache:    {display_text(str(cache_path))}, {human_bytes(bytes_on_disk(cache_path))} "
              "(mmgenre cache stats)")
    else:
        print(f"cache:    {display_text(str(cache_path))} (empty)")
    card = ckpt.metadata.get("model_card")
    if card:
        print()
        print(card.rstrip())
    elif ckpt.metrics:
        print("metrics:  " + json.dumps(ckpt.metrics, default=str))
    return 0


def _add_cache_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache", metavar="PATH",
                        help="the feature cache file (default: features.sqlite3 in the user cache folder)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmgenre", description="Music genre tagging from audio and lyrics.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and timing")
    # -v also after the subcommand (`mmgenre predict -v ...`), as users type it.
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="log progress and timing")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", parents=[verbose], help="classify audio files or folders (searched recursively)")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--model", metavar="PATH", help="checkpoint (default: the model shipped with mmgenre)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--batch-size", type=int, default=16, metavar="N")
    p.add_argument("--threads", default="auto", metavar="N|auto",
                   help="CPU threads for the model (default auto: the CPUs other processes leave free)")
    p.add_argument("--top-k", type=int, default=3, metavar="K")
    p.add_argument("--listen", choices=PLAN_NAMES, default=DEFAULT_PLAN,
                   help="how long to listen to a track the model is unsure of (a model that listens in "
                        "rounds; --json reports the windows each track was heard at)")
    p.add_argument("--json", action="store_true", help="one JSON object per track, one a line")
    p.add_argument("--attention", action="store_true", help="with --json: the lyrics lines/words the model attended to")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--lyrics-file", metavar="F.jsonl", help='JSON lines of {"path": ..., "lyrics": ...}')
    group.add_argument("--no-lyrics", action="store_true", help="classify from audio alone")
    _add_cache_option(p)
    p.add_argument("--no-cache", action="store_true", help="neither read nor store features in the feature cache")
    p.add_argument("--cache-identity", choices=["stat", "content"], default="stat",
                   help="a file is the same file by path + size + mtime (default) or by a hash of its bytes")
    p.set_defaults(func=_cmd_predict)

    c = sub.add_parser("cache", parents=[verbose], help="the feature cache: stats, prune (changed or deleted files), "
                       "clear")
    c.add_argument("action", choices=["stats", "prune", "clear"])
    _add_cache_option(c)
    c.add_argument("--quick", action="store_true", help="stats: do not check whether the files still match")
    c.add_argument("--other-backbones", action="store_true",
                   help="prune: also drop the features of every backbone but --model's")
    c.add_argument("--model", metavar="PATH", help="prune --other-backbones: the model whose features to keep")
    c.set_defaults(func=_cmd_cache)

    i = sub.add_parser("info", parents=[verbose], help="show a model's genres, sizes and model card")
    i.add_argument("--model", metavar="PATH")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Whatever the locale (C, POSIX, a pipe), an odd character never ends a run.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "batch_size", 1) < 1 or getattr(args, "top_k", 1) < 1:
        print("mmgenre: --batch-size and --top-k must be at least 1", file=sys.stderr)
        return 2
    from .errors import MMGenreError

    try:
        return args.func(args)
    except MMGenreError as exc:
        print(f"mmgenre: {display_text(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `mmgenre info | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
