"""Per-window musicnn features of every labelled clip, for the listening benchmarks.

Each clip of ``cv_pool.load_pool`` (Emotify, GTZAN, the FMA sample) is decoded at every
window the default config's model can hear (``training/configs/default_model.json``:
12 windows, one per twelfth of the clip, heard in rounds) and at the four windows 0.4.1
heard (one per quarter), each window through the pretrained musicnn to its 200-d
penultimate features, exactly as inference computes them (``load_windows``, the
model's front end, ONNX Runtime on the CPU).

    python benchmarks/window_features.py --out /tmp/window_features.npz

Writes ``paths``, ``genres``, ``artists``, ``sources``, ``rounds`` [shape=(clips, 12, 200)]
(NaN rows where a clip is too short for a window), ``order`` and ``ends`` (the
listening order and rounds) and ``fixed4`` [shape=(clips, 4, 200)].
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.cv_pool import DATA, load_pool  # noqa: E402

DEFAULT_CONFIG = ROOT / "training" / "configs" / "default_model.json"


def window_features(paths: list[str], *, config: Path = DEFAULT_CONFIG) -> dict[str, np.ndarray]:
    """Features of every window of ``config``'s model [shape=(clips, num_windows, dim)]
    and of 0.4.1's four windows [shape=(clips, 4, dim)]."""
    import torch

    from mmgenre_core.audio import listening_order, load_windows
    from mmgenre_core.predict import GenreClassifier
    from training.config import load_config

    torch.set_num_threads(2)
    clf = GenreClassifier.load(device="cpu")  # its front end and musicnn (ONNX on the CPU)
    rounds_cfg = load_config(config).audio_config()
    fixed_cfg = replace(rounds_cfg, num_windows=4, window_order=(), window_rounds=())
    num_windows = rounds_cfg.num_windows
    rounds, fixed = [], []
    started = time.perf_counter()
    for n, path in enumerate(paths):
        for cfg, out, width in ((rounds_cfg, rounds, num_windows), (fixed_cfg, fixed, 4)):
            windows = load_windows(path, config=cfg)
            feats = clf._audio_features([windows])[0].numpy()
            if feats.shape[0] != width:  # a clip no longer than one window: that one window only
                feats = np.concatenate([feats, np.full((width - feats.shape[0], feats.shape[1]), np.nan,
                                                       np.float32)])
            out.append(feats)
        if (n + 1) % 100 == 0:
            print(f"  {n + 1}/{len(paths)} clips ({time.perf_counter() - started:.0f} s)", flush=True)
    order, ends = listening_order(rounds_cfg)
    return {"rounds": np.stack(rounds), "fixed4": np.stack(fixed), "order": np.array(order), "ends": np.array(ends)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the training config whose windows to use")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    from mmgenre_core.native_stderr import filtered_native_stderr

    pool = load_pool(args.data)
    with filtered_native_stderr():
        feats = window_features([c["path"] for c in pool], config=args.config)
    np.savez(args.out, paths=np.array([c["path"] for c in pool]), genres=np.array([c["genre"] for c in pool]),
             artists=np.array([c["artist"] for c in pool]), sources=np.array([c["source"] for c in pool]), **feats)
    print(f"{len(pool)} clips -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
