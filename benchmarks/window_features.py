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

    from mmgenre_core.audio import listening_order
    from mmgenre_core.predict import GenreClassifier
    from training.config import load_config
    from training.frozen_heads import clip_window_features

    torch.set_num_threads(2)
    clf = GenreClassifier.load(device="cpu")  # its front end and musicnn (ONNX on the CPU)
    rounds_cfg = load_config(config).audio_config()
    fixed_cfg = replace(rounds_cfg, num_windows=4, window_order=(), window_rounds=())
    out = {}
    for name, cfg in (("rounds", rounds_cfg), ("fixed4", fixed_cfg)):
        started = time.perf_counter()
        out[name], errors = clip_window_features(clf.model, paths, audio_config=cfg)
        failed = [(p, e) for p, e in zip(paths, errors) if e is not None]
        if failed:
            raise SystemExit(f"{len(failed)} clips failed to decode, e.g. {failed[0]}")
        print(f"  {name}: {len(paths)} clips x {cfg.num_windows} windows in {time.perf_counter() - started:.0f} s",
              flush=True)
    order, ends = listening_order(rounds_cfg)
    return {**out, "order": np.array(order), "ends": np.array(ends)}


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
