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
30-s window, and the pretrained musicnn on the windows the shipped default model
uses (read from the shipped checkpoint: 4 x 3 s at 16 kHz).

Usage::

    python benchmarks/bench_inference.py [--branch both] [--device auto] [--batch-size 16] [--repeat 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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

    from mmgenre_core.checkpoint import Checkpoint, save_checkpoint
    from mmgenre_core.config import ModelConfig, TextConfig
    from mmgenre_core.model import GenreModel
    from mmgenre_core.text import PAD_TOKEN, UNK_TOKEN

    torch.manual_seed(0)
    if branch == "musicnn":
        # Listens as the shipped default model does (its windows: 4 x 3 s at 16 kHz).
        from mmgenre_core.checkpoint import load_checkpoint
        from mmgenre_core.predict import default_model_path

        config = ModelConfig(audio_branch="musicnn", n_mels=96)
        model = GenreModel(config, load_checkpoint(default_model_path()).audio_config)
        model.cnn.load_pretrained()
    else:
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

    clf = GenreClassifier.load(model_path, device=device)
    work = files * repeat
    # Warm up kernels and the decoder outside the timed region.
    clf.predict(files[:2], batch_size=2)
    start = time.perf_counter()
    if mode == "mmgenre":
        results = clf.predict(work, batch_size=batch_size)
        assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    elif mode == "decode":
        torch.set_num_threads(1)
        for f in work:
            load_windows(f, config=clf.audio_config)
    elif mode == "naive":
        import librosa

        from mmgenre_core.audio import window_offsets

        cfg = clf.audio_config
        with torch.inference_mode():
            for f in work:
                y, _ = librosa.load(f, sr=cfg.sample_rate, mono=True)  # the whole file
                n = cfg.window_samples
                starts = [int(o * cfg.sample_rate) for o in window_offsets(len(y) / cfg.sample_rate, config=cfg)]
                # Pad short files by repeating, as mmgenre does.
                windows = np.stack([np.resize(y[s:s + n], n) for s in starts])
                mel = clf.model.frontend(torch.from_numpy(windows).to(clf.device))
                logits = clf.model.classify(clf.model.encode_audio(mel), clf.model.absent_lyrics(len(windows)))
                torch.softmax(logits, -1).mean(dim=0)
    else:
        raise ValueError(mode)
    elapsed = time.perf_counter() - start
    return {"mode": mode, "tracks": len(work), "seconds": elapsed, "tracks_per_s": len(work) / elapsed,
            "s_per_track": elapsed / len(work), "peak_rss_mb": peak_rss_mb(), "device": str(clf.device)}


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
            for name, files in datasets().items():
                res = {m: run_child(m, model_path, files, args) for m in ("mmgenre", "decode", "naive")}
                rows.append({"branch": branch, "data": name, "files": len(files), **{m: r for m, r in res.items()},
                             "speedup_vs_naive": res["mmgenre"]["tracks_per_s"] / res["naive"]["tracks_per_s"]})
    print(f"\ndevice: {rows[0]['mmgenre']['device']}, cores: {os.cpu_count()}, batch size {args.batch_size}, "
          f"each list timed over {args.repeat} passes. paper: the paper's CNN at its size (random weights), one "
          f"30-s window; musicnn: the pretrained musicnn, the default model's windows\n")
    print("| branch | data | tracks | mmgenre tracks/s | decode s/track (1 thread) | naive tracks/s | speed-up | "
          "peak RSS mmgenre | peak RSS naive |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['branch']} | {r['data']} | {r['mmgenre']['tracks']} | {r['mmgenre']['tracks_per_s']:.1f} | "
              f"{r['decode']['s_per_track']:.3f} | {r['naive']['tracks_per_s']:.2f} | {r['speedup_vs_naive']:.1f}x | "
              f"{r['mmgenre']['peak_rss_mb']:.0f} MB | {r['naive']['peak_rss_mb']:.0f} MB |")
    for name in {r["data"] for r in rows} if len(branches) == 2 else ():
        paper, musicnn = (next(r for r in rows if r["branch"] == b and r["data"] == name) for b in branches)
        print(f"{name}: musicnn branch takes {paper['mmgenre']['tracks_per_s'] / musicnn['mmgenre']['tracks_per_s']:.2f}x "
              "the paper branch's time per track")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
