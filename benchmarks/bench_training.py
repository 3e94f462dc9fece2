"""Training speed: prepare throughput, seconds per epoch, and what that means for FMA-medium.

Measures, on this machine, with the real data in ../shared/data:

1. **prepare**: decoding the Emotify + FMA-sample clips of ``default_model.json``
   (294 real 30-s MP3s: the genres kept by that config) into
   log-mels with ``training/prepare.py`` into a fresh cache, on every core (or
   ``--workers``); clips per second and the implied time for FMA-medium's 25,000 clips.
2. **epoch (default model)**: ``training/configs/default_model.json`` (Emotify +
   FMA sample audio, the lyrics corpus), ``--epochs`` epochs; seconds per epoch
   (median), from the prepared arrays only.
3. **FMA-medium step on this device**: the paper's model (``fma_medium.json``: 128
   mels, full 30-s windows, batch 32, HAN 50/50 over 50 x 20 lyrics grids) on batches
   of the real prepared clips (every other example with lyrics from the corpus);
   seconds per training step, and the implied epoch time for FMA-medium's 19,922
   training tracks (plus validation).

Usage::

    python benchmarks/bench_training.py [--workers 0] [--epochs 3] [--steps 8] [--device auto] [--json OUT]

Other processes on the machine slow all of this down: report the numbers with the
command and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FMA_MEDIUM_CLIPS = 25_000
FMA_MEDIUM_TRAIN = 19_922
FMA_MEDIUM_VALID = 2_505


def bench_prepare(workers: int, cache: Path) -> dict:
    from training.config import load_config
    from training.datasets import build_dataset
    from training.prepare import prepare_dataset

    cfg = load_config(ROOT / "training" / "configs" / "default_model.json")
    dataset = build_dataset(cfg)
    start = time.perf_counter()
    prep = prepare_dataset(dataset.examples, cfg.prepare_audio_config(), cache, name="bench", workers=workers,
                           chunk_size=cfg.prepare.chunk_size, progress=False)
    seconds = time.perf_counter() - start  # pool start-up included
    rate = len(prep.paths) / seconds
    return {"clips": len(prep.paths), "ok": prep.n_ok, "workers": workers or os.cpu_count(),
            "seconds": round(seconds, 2), "clips_per_second": round(rate, 2),
            "fma_medium_minutes": round(FMA_MEDIUM_CLIPS / rate / 60, 1)}


def bench_epochs(epochs: int, cache: Path, out: Path) -> dict:
    from training.config import load_config
    from training.train import train

    cfg = load_config(ROOT / "training" / "configs" / "default_model.json",
                      [f"train.epochs={epochs}", f"prepare.cache_dir={cache}", "train.max_minutes=null",
                       "train.patience=0"])
    cfg.name = "bench"  # reuse the folder prepared above
    metrics = train(cfg, out, progress=False)
    times = [h["seconds"] for h in metrics["history"]]
    return {"config": "training/configs/default_model.json", "epochs": len(times),
            "seconds_per_epoch": [round(t, 2) for t in times],
            "median_seconds_per_epoch": round(statistics.median(times), 2),
            "train_examples": metrics["dataset"]["train"], "crop_seconds": cfg.train.crop_seconds}


def bench_fma_step(steps: int, device_name: str, cache: Path) -> dict:
    """Training steps of the paper's model on full 30-s clips, batch 32, half the rows with lyrics."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from mmgenre_core.device import autocast, autocast_dtype, resolve_device
    from training.config import load_config, model_config_for
    from training.datasets import Dataset
    from training.loader import BatchSpec, build_table, collate
    from training.lyrics_data import build_vocabulary, tokenize_all
    from training.prepare import prepare_dataset
    from mmgenre_core.model import GenreModel
    from training.datasets import build_dataset

    device = resolve_device(device_name)
    cfg = load_config(ROOT / "training" / "configs" / "default_model.json")
    fma_cfg = load_config(ROOT / "training" / "configs" / "fma_medium.json")
    ds = build_dataset(cfg)
    audio = [e for e in ds.examples if e.path]
    lyrics = [e for e in ds.examples if e.lyrics]
    # Pair clips with lyrics texts: "tracks with both" as FMA-medium with fetched lyrics has.
    for e, l in zip(audio[::2], lyrics):
        e.lyrics = l.lyrics
    prep = prepare_dataset(audio, cfg.prepare_audio_config(), cache, name="bench", progress=False)
    text = fma_cfg.text_config()
    vocab = build_vocabulary(tokenize_all([e.lyrics for e in audio if e.lyrics], text), text, max_size=20000)
    table = build_table(Dataset(audio, ds.genres), prepared=prep, vocab=vocab, text_config=text)
    mc = model_config_for(fma_cfg, n_genres=16, vocab_size=len(vocab), embed_dim=fma_cfg.vectors.dim,
                          use_audio=True, use_lyrics=True)
    torch.manual_seed(0)
    model = GenreModel(mc, fma_cfg.audio_config()).to(device)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    rng = np.random.default_rng(0)
    amp = autocast_dtype(device) is not None
    times = []
    for step in range(steps + 2):  # 2 warm-up steps
        idx = rng.choice(len(table), size=32, replace=False)
        no = np.zeros(32, dtype=bool)
        batch = collate(table, BatchSpec(idx, np.zeros(32, dtype=np.int64), no, no), None).to(device)
        y = torch.randint(0, 16, (32,), device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with autocast(device) if amp else torch.autocast("cpu", enabled=False):
            logits = model(batch.fused())
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= 2:
            times.append(time.perf_counter() - t0)
    per_step = statistics.median(times)
    n_batches = -(-FMA_MEDIUM_TRAIN // 32)
    # Validation: forward only (~1/3 of a step) over 2,505 tracks, + BN recalibration (50 forward batches).
    per_epoch = per_step * (n_batches + (FMA_MEDIUM_VALID / 32 + 50) / 3)
    return {"device": str(device), "batch": 32, "frames": int(table.frames), "lyrics_rows_per_batch": "~50%",
            "seconds_per_step": round(per_step, 3), "fma_medium_train_batches": n_batches,
            "fma_medium_epoch_minutes_estimate": round(per_epoch / 60, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=0, help="prepare processes (0 = every core)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--skip", nargs="*", default=[], choices=["prepare", "epochs", "fma"])
    p.add_argument("--json", metavar="OUT")
    args = p.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    results: dict = {"cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="mmgenre-bench-") as tmp:
        cache = Path(tmp) / "cache"
        if "prepare" not in args.skip:
            results["prepare"] = bench_prepare(args.workers, cache)
            print("prepare:", json.dumps(results["prepare"]), flush=True)
        if "epochs" not in args.skip:
            results["epochs"] = bench_epochs(args.epochs, cache, Path(tmp) / "run")
            print("epochs:", json.dumps(results["epochs"]), flush=True)
        if "fma" not in args.skip:
            results["fma_medium_step"] = bench_fma_step(args.steps, args.device, cache)
            print("fma-medium step:", json.dumps(results["fma_medium_step"]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
