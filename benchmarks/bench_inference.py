"""Inference speed and memory: mmgenre's pipeline against the naive librosa path.

For the real full-length tracks and the real 30-s clips in ../shared/data this
prints, per data set:

* end-to-end tracks per second of ``GenreClassifier.predict`` (decode the analysed
  window only, in worker threads, batched model on the chosen device);
* seconds per track for decoding alone (``load_windows``, one thread);
* the naive path in the same run: ``librosa.load`` of the whole file, then the same
  features and model, one track at a time;
* peak resident memory of each path, each measured in its own child process.

Both audio branches are timed (``--branch``): the paper's CNN at the paper's size
(``ModelConfig()`` defaults, random weights: speed does not depend on them) on one
30-s window, and the shipped default model itself (pretrained musicnn, 3-s windows at
16 kHz, heard in rounds: each listening plan, and side by side in the same run the
same model hearing four windows, one per quarter, on every track, as 0.4.1 did; the
naive path hears those four). These cold runs never read a feature cache.

Then the warm re-tag (``--warm-tracks``, default: every real clip and full-length
track in ../shared/data, 477 files): a beets library of copies of them, one
``beet mmgenre -f`` that fills the feature cache (cold, timed too), then
``beet mmgenre -f`` with another ``min_confidence`` (warm), each in a fresh process.
Reported: tracks/s end to end (process start, torch import and model load
included) and as the command itself prints it, and each process's peak memory.

Usage::

    python benchmarks/bench_inference.py [--branch both] [--device auto] [--batch-size 16] [--repeat 3]
                                         [--warm-tracks N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("MMGENRE_DATA_DIR") or ROOT.parent / "shared" / "data")


def datasets() -> dict[str, list[str]]:
    full = sorted(str(p) for p in (DATA / "full_tracks").glob("*.ogg"))
    clips = sorted(str(p) for p in (DATA / "emotify").glob("*/*.mp3"))
    # 48 clips, 12 of each genre, so every run sees the same mix.
    by_genre: dict[str, list[str]] = {}
    for c in clips:
        by_genre.setdefault(Path(c).parent.name, []).append(c)
    sample = [c for g in sorted(by_genre) for c in by_genre[g][:12]]
    return {"full-length tracks (Ogg, 2.5-5 min)": full, "30-s clips (MP3)": sample}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def make_model(path: Path, branch: str) -> None:
    import torch

    if branch == "musicnn":  # the shipped default model itself
        from mmgenre_core.predict import default_model_path

        shutil.copyfile(default_model_path(), path)
        return
    if branch == "musicnn-fixed4":  # the same model hearing four windows, one per quarter, every track (0.4.1's)
        from dataclasses import replace

        from mmgenre_core.checkpoint import load_checkpoint, save_checkpoint
        from mmgenre_core.predict import default_model_path

        ckpt = load_checkpoint(default_model_path())
        ckpt.audio_config = replace(ckpt.audio_config, num_windows=4, window_order=(), window_rounds=())
        ckpt.metadata.pop("listening", None)
        save_checkpoint(path, ckpt)
        return

    from mmgenre_core.checkpoint import Checkpoint, save_checkpoint
    from mmgenre_core.config import ModelConfig, TextConfig
    from mmgenre_core.model import GenreModel
    from mmgenre_core.text import PAD_TOKEN, UNK_TOKEN

    torch.manual_seed(0)
    config = ModelConfig()
    model = GenreModel(config)
    vocab = [PAD_TOKEN, UNK_TOKEN] + [f"w{i}" for i in range(config.vocab_size - 2)]
    genres = [f"g{i}" for i in range(config.n_genres)]
    save_checkpoint(path, Checkpoint.from_model(model, text_config=TextConfig(), genres=genres, vocab=vocab,
                                                metadata={"name": "bench-random"}))


def child(mode: str, model_path: str, files: list[str], repeat: int, device: str, batch_size: int) -> dict:
    """Run one path in this (child) process and return its timings and peak memory."""
    import numpy as np
    import torch

    from mmgenre_core.audio import load_windows
    from mmgenre_core.predict import GenreClassifier

    # "mmgenre-fast"/"-thorough": another listening plan (mmgenre: the default, balanced).
    clf = GenreClassifier.load(model_path, device=device)
    listen = mode.split("-")[1] if mode in ("mmgenre-fast", "mmgenre-thorough") else "balanced"
    work = files * repeat
    # Warm up kernels and the decoder outside the timed region.
    clf.predict(files[:2], batch_size=2)
    start = time.perf_counter()
    heard = None
    if mode.startswith("mmgenre"):
        results = clf.predict(work, batch_size=batch_size, listen=listen)
        assert all(r.ok for r in results), [r.error for r in results if not r.ok]
        heard = sum(r.windows for r in results) / len(results)
    elif mode == "decode":  # the first round's windows (all of a model that hears every window at once)
        from mmgenre_core.audio import listening_order

        order, ends = listening_order(clf.audio_config)
        torch.set_num_threads(1)
        for f in work:
            load_windows(f, config=clf.audio_config, slots=order[:ends[0]])
    elif mode == "naive":
        import librosa

        from mmgenre_core.audio import window_offsets
        from mmgenre_core.model import FusedBatch

        cfg = clf.audio_config
        with torch.inference_mode():
            for f in work:
                y, _ = librosa.load(f, sr=cfg.sample_rate, mono=True)  # the whole file
                n = cfg.window_samples
                starts = [int(o * cfg.sample_rate) for o in window_offsets(len(y) / cfg.sample_rate, config=cfg)]
                # Pad short files by repeating, as mmgenre does.
                windows = np.stack([np.resize(y[s:s + n], n) for s in starts])
                mel = clf.model.frontend(torch.from_numpy(windows).to(clf.device))
                logits = clf.model(FusedBatch.full(mel=mel))
                torch.softmax(logits, -1).mean(dim=0)
    else:
        raise ValueError(mode)
    elapsed = time.perf_counter() - start
    return {"mode": mode, "tracks": len(work), "seconds": elapsed, "tracks_per_s": len(work) / elapsed,
            "s_per_track": elapsed / len(work), "peak_rss_mb": peak_rss_mb(), "device": str(clf.device),
            "windows_per_track": heard}


# --------------------------------------------------------------------------- #
# Warm re-tag through beets
# --------------------------------------------------------------------------- #

_BEET = ("import resource, sys\n"
         "from beets.ui import main\n"
         "try:\n    main()\n"
         "finally:\n    print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n")


def real_tracks() -> list[Path]:
    return (sorted((DATA / "emotify").glob("*/*.mp3")) + sorted((DATA / "gtzan").glob("*/*.mp3"))
            + sorted((DATA / "full_tracks").glob("*.ogg")))


def beet(beetsdir: Path, *args: str) -> dict:
    """``beet ARGS`` in a fresh process: wall seconds, the rate it printed, peak RSS."""
    env = {**os.environ, "BEETSDIR": str(beetsdir), "HOME": str(beetsdir),
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _BEET, *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"beet {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    rss = re.search(r"MAXRSS_KB (\d+)", out.stderr)
    load = re.search(r"loaded in ([0-9.]+) s", out.stderr)
    # "N tracks: ... in 1.2 s (400.0 tracks/s; model loaded in 2.1 s)": the run's own time, from its first track
    rate = re.search(r"in ([0-9.]+) s \(([0-9.]+) tracks/s", out.stdout + out.stderr)
    return {"wall_s": wall, "command_s": float(rate.group(1)) if rate else None,
            "model_load_s": float(load.group(1)) if load else None,
            "command_tracks_per_s": float(rate.group(2)) if rate else None,
            "peak_rss_mb": int(rss.group(1)) / 1024 if rss else None}


def bench_warm_retag(n: int, batch_size: int, rounds: int) -> dict:
    tracks = real_tracks()[:n]
    with tempfile.TemporaryDirectory(prefix="mmgenre-warm-") as tmp:
        work = Path(tmp)
        music, beetsdir = work / "music", work / "beets"
        for i, src in enumerate(tracks):
            dst = music / f"{i // 100:02d}" / f"{i:04d}-{src.parent.name}-{src.name}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        beetsdir.mkdir()
        (beetsdir / "config.yaml").write_text(
            f"directory: {music}\nlibrary: {beetsdir / 'library.db'}\nplugins: [mmgenre]\n"
            "import:\n  copy: no\n  write: yes\n  log:\n"
            f"mmgenre:\n  auto: no\n  batch_size: {batch_size}\n  cache_path: {work / 'features.sqlite3'}\n",
            encoding="utf-8")
        beet(beetsdir, "import", "-A", "-q", str(music))
        cold = beet(beetsdir, "-v", "mmgenre", "-f")
        print(f"cold  beet mmgenre -f: {len(tracks)} tracks in {cold['wall_s']:.1f} s "
              f"({len(tracks) / cold['wall_s']:.1f} tracks/s end to end; the command: "
              f"{cold['command_tracks_per_s']} tracks/s), peak {cold['peak_rss_mb']:.0f} MB", flush=True)
        warm = []
        for r in range(rounds):
            conf = ("0.5", "0.3")[r % 2]  # another min_confidence each round
            (beetsdir / "conf.yaml").write_text(f"mmgenre:\n  min_confidence: {conf}\n", encoding="utf-8")
            res = beet(beetsdir, "-v", "-c", str(beetsdir / "conf.yaml"), "mmgenre", "-f")
            # The rate once running (the command's own: it counts from the first track, after the torch
            # import and the model load): a 50,000-track library pays the start-up once.
            res["after_load_tracks_per_s"] = res["command_tracks_per_s"]
            warm.append(res)
            print(f"warm  beet mmgenre -f (min_confidence {conf}): {len(tracks)} tracks in {res['wall_s']:.1f} s "
                  f"({len(tracks) / res['wall_s']:.1f} tracks/s end to end; the command: "
                  f"{res['command_tracks_per_s']} tracks/s; after the {res['model_load_s']:.1f} s of torch import and "
                  f"model load: {res['after_load_tracks_per_s']:.0f} tracks/s), peak {res['peak_rss_mb']:.0f} MB",
                  flush=True)
        size = sum(p.stat().st_size for p in work.glob("features.sqlite3*"))
    best = min(warm, key=lambda r: r["wall_s"])
    return {"tracks": len(tracks), "cold": cold, "warm": warm, "cache_bytes": size,
            "warm_tracks_per_s_end_to_end": len(tracks) / best["wall_s"],
            "warm_tracks_per_s_command": max(r["command_tracks_per_s"] or 0 for r in warm),
            "warm_tracks_per_s_after_load": max(r["after_load_tracks_per_s"] for r in warm)}


def run_child(mode: str, model_path: Path, files: list[str], args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--model", str(model_path), "--device", args.device,
           "--batch-size", str(args.batch_size), "--repeat", str(args.repeat), "--files", *files]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"benchmark child {mode} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3, help="passes over each file list (timed together)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--branch", choices=["paper", "musicnn", "both"], default="both",
                        help="audio branch(es) to time")
    parser.add_argument("--warm-tracks", type=int, default=477,
                        help="real tracks for the warm re-tag through beets (0: skip it)")
    parser.add_argument("--warm-rounds", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--files", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.model, args.files, args.repeat, args.device, args.batch_size)))
        return

    rows = []
    branches = ["paper", "musicnn"] if args.branch == "both" else [args.branch]
    with tempfile.TemporaryDirectory() as tmp:
        for branch in branches:
            model_path = Path(tmp) / f"{branch}.pt"
            make_model(model_path, branch)
            fixed4 = Path(tmp) / "musicnn-fixed4.pt"
            if branch == "musicnn":
                make_model(fixed4, "musicnn-fixed4")
            for name, files in datasets().items():
                modes = ("mmgenre", "mmgenre-fast", "mmgenre-thorough", "decode") \
                    if branch == "musicnn" else ("mmgenre", "decode", "naive")
                # Listening in rounds against fixed four windows, side by side in the same run
                # (interleaved, so a slower minute of the machine hits both).
                res = {}
                for m in modes:
                    res[m] = run_child(m, model_path, files, args)
                    if m == "mmgenre" and branch == "musicnn":
                        res["fixed4"] = run_child("mmgenre", fixed4, files, args)
                if branch == "musicnn":
                    res["naive"] = run_child("naive", fixed4, files, args)
                rows.append({"branch": branch, "data": name, "files": len(files), **{m: r for m, r in res.items()},
                             "speedup_vs_naive": res["mmgenre"]["tracks_per_s"] / res["naive"]["tracks_per_s"]})
    print(f"\ndevice: {rows[0]['mmgenre']['device']}, cores: {os.cpu_count()}, batch size {args.batch_size}, "
          f"each list timed over {args.repeat} passes. paper: the paper's CNN at its size (random weights), one "
          f"30-s window; musicnn: the pretrained musicnn, the default model's windows\n")
    print("| branch | data | tracks | mmgenre tracks/s | decode s/track (1 thread) | naive tracks/s | speed-up | "
          "peak RSS mmgenre | peak RSS naive |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "fixed4" in r:
            print(f"({r['data']}: listening in rounds, tracks/s (windows a track): balanced "
                  f"{r['mmgenre']['tracks_per_s']:.1f} ({r['mmgenre']['windows_per_track']:.2f}), fast "
                  f"{r['mmgenre-fast']['tracks_per_s']:.1f} ({r['mmgenre-fast']['windows_per_track']:.2f}), thorough "
                  f"{r['mmgenre-thorough']['tracks_per_s']:.1f} ({r['mmgenre-thorough']['windows_per_track']:.2f}); "
                  f"fixed four windows {r['fixed4']['tracks_per_s']:.1f}: balanced is "
                  f"{r['mmgenre']['tracks_per_s'] / r['fixed4']['tracks_per_s']:.2f}x)")
    for r in rows:
        print(f"| {r['branch']} | {r['data']} | {r['mmgenre']['tracks']} | {r['mmgenre']['tracks_per_s']:.1f} | "
              f"{r['decode']['s_per_track']:.3f} | {r['naive']['tracks_per_s']:.2f} | {r['speedup_vs_naive']:.1f}x | "
              f"{r['mmgenre']['peak_rss_mb']:.0f} MB | {r['naive']['peak_rss_mb']:.0f} MB |")
    for name in {r["data"] for r in rows} if len(branches) == 2 else ():
        paper, musicnn = (next(r for r in rows if r["branch"] == b and r["data"] == name) for b in branches)
        print(f"{name}: musicnn branch takes {paper['mmgenre']['tracks_per_s'] / musicnn['mmgenre']['tracks_per_s']:.2f}x "
              "the paper branch's time per track")
    results = {"cold": rows}
    if args.warm_tracks > 0:
        print()
        results["warm_retag"] = bench_warm_retag(args.warm_tracks, args.batch_size, args.warm_rounds)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
