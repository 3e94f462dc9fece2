#!/usr/bin/env python3
"""Benchmarks of the beets plugin.

1. Start-up overhead: ``beet version`` and ``beet ls`` with the plugin enabled vs
   disabled (median of ``--repeat`` runs each, alternated), on a library of the
   real Emotify clips. The plugin must not import torch or load a model there.
2. Throughput: ``beet mmgenre -f`` on a library of ``--tracks`` real files vs
   ``mmgenre predict`` on the same files, same model and batch size. The plugin
   should stay within 20% of the core's end-to-end speed.

The files are copies of ../shared/data/emotify (cycled to reach ``--tracks``),
made in a temporary folder that is removed afterwards. Without ``--model`` a
randomly initialised model of the paper's size (16 genres, 30 s windows) is used:
the speed does not depend on the weights.

    python benchmarks/bench_plugin.py                       # both, 1000 tracks
    python benchmarks/bench_plugin.py --only overhead --repeat 15
    python benchmarks/bench_plugin.py --only throughput --tracks 200 --model model.pt
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MMGENRE_DATA_DIR", ROOT.parent / "shared" / "data"))
FMA_GENRES = ["Blues", "Classical", "Country", "Easy Listening", "Electronic", "Experimental", "Folk", "Hip-Hop",
              "Instrumental", "International", "Jazz", "Old-Time / Historic", "Pop", "Rock", "Soul-RnB", "Spoken"]


BYTECODE = True  # --no-bytecode: measure as with PYTHONDONTWRITEBYTECODE=1 (every import compiles)


def env_for(beetsdir: Path) -> dict[str, str]:
    env = {**os.environ, "BEETSDIR": str(beetsdir), "HOME": str(beetsdir),
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    if BYTECODE:
        # As after `pip install`: compiled modules are cached (outside the repository).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(beetsdir.parent / "pycache")
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def beet(beetsdir: Path, *args: str, check: bool = True, quiet: bool = True) -> float:
    """Run ``beet ARGS`` in a fresh process; returns its wall time in seconds."""
    cmd = [sys.executable, "-c", "import sys; from beets.ui import main; sys.exit(main())", *args]
    started = time.perf_counter()
    out = subprocess.run(cmd, env=env_for(beetsdir), stdout=subprocess.DEVNULL if quiet else None,
                         stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - started
    if check and out.returncode != 0:
        raise RuntimeError(f"beet {' '.join(args)} failed:\n{out.stderr}")
    return elapsed


def write_config(beetsdir: Path, *, plugins: list[str], music: Path, extra: str = "") -> None:
    beetsdir.mkdir(parents=True, exist_ok=True)
    (beetsdir / "config.yaml").write_text(
        f"directory: {music}\nlibrary: {beetsdir / 'library.db'}\nplugins: [{', '.join(plugins)}]\n"
        "import:\n  copy: no\n  write: no\n  log:\n" + extra, encoding="utf-8")


def copy_tracks(n: int, folder: Path) -> list[Path]:
    clips = sorted((DATA / "emotify").glob("*/*.mp3"))
    if not clips:
        sys.exit(f"no Emotify clips under {DATA}")
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        src = clips[i % len(clips)]
        dst = folder / f"{i // 100:03d}" / f"{i:05d}-{src.parent.name}-{src.name}"
        dst.parent.mkdir(exist_ok=True)
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o644)
        out.append(dst)
    return out


def make_model(path: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    import torch

    from mmgenre_core.checkpoint import Checkpoint, save_checkpoint
    from mmgenre_core.config import AudioConfig, ModelConfig, TextConfig
    from mmgenre_core.model import GenreModel

    config = ModelConfig(n_genres=len(FMA_GENRES))
    torch.manual_seed(0)
    model = GenreModel(config, AudioConfig()).eval()
    vocab = ["<pad>", "<unk>"] + [f"w{i}" for i in range(config.vocab_size - 2)]
    ckpt = Checkpoint.from_model(model, text_config=TextConfig(), genres=FMA_GENRES, vocab=vocab,
                                 metadata={"name": "bench-random", "version": "0"})
    return save_checkpoint(path, ckpt)


def bench_overhead(work: Path, repeat: int) -> dict:
    """Median wall time of fresh ``beet`` processes with and without mmgenre enabled.

    Two baselines: no plugin at all, and another (light, built-in) plugin already
    enabled, which isolates mmgenre's own cost from beets' cost of loading any plugin.
    """
    music = work / "overhead-music"
    copy_tracks(len(list((DATA / "emotify").glob("*/*.mp3"))), music)
    setups = {"none": ([], ["mmgenre"]), "with 'the'": (["the"], ["the", "mmgenre"])}
    first = None
    results: dict = {}
    for label, (base, plus) in setups.items():
        off, on = work / f"beets-off-{len(base)}", work / f"beets-on-{len(base)}"
        write_config(off, plugins=base, music=music)
        write_config(on, plugins=plus, music=music, extra="mmgenre:\n  auto: no\n")
        if first is None:
            beet(off, "import", "-A", "-q", str(music))
            first = off / "library.db"
        else:
            shutil.copyfile(first, off / "library.db")
        shutil.copyfile(first, on / "library.db")
        for args in (["version"], ["ls"], ["ls", "genres:Rock"]):
            times: dict[str, list[float]] = {"off": [], "on": []}
            beet(off, *args), beet(on, *args)  # warm the file and bytecode caches
            for _ in range(repeat):
                times["off"].append(beet(off, *args))
                times["on"].append(beet(on, *args))
            key = f"beet {' '.join(args)} (baseline plugins: {label})"
            med_off, med_on = statistics.median(times["off"]), statistics.median(times["on"])
            results[key] = {"disabled_s": round(med_off, 3), "enabled_s": round(med_on, 3),
                            "overhead_ms": round(1000 * (med_on - med_off), 1),
                            "min_disabled_s": round(min(times["off"]), 3),
                            "min_enabled_s": round(min(times["on"]), 3)}
            print(f"{key:48s} without {med_off:.3f} s  with mmgenre {med_on:.3f} s  "
                  f"overhead {1000 * (med_on - med_off):+.0f} ms (median of {repeat}; min "
                  f"{min(times['off']):.3f} / {min(times['on']):.3f})", flush=True)
    return results


def _run_predict(music: Path, n: int, model: Path, batch_size: int, work: Path, round_no: int) -> float:
    # A new feature cache each run: both sides cold (a shared one made the second predict read it).
    cmd = [sys.executable, "-m", "mmgenre_core.cli", "predict", str(music), "--model", str(model),
           "--batch-size", str(batch_size), "--json", "--cache", str(work / f"predict-cache-{round_no}.sqlite3")]
    started = time.perf_counter()
    out = subprocess.run(cmd, env=env_for(work / "predict-home"), capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    if len(lines) != n:
        raise RuntimeError(f"mmgenre predict gave {len(lines)} results for {n} files:\n{out.stderr[-2000:]}")
    return elapsed


def _run_plugin(work: Path, n: int, model: Path, batch_size: int, write: bool, round_no: int) -> float:
    """A fresh library of fresh copies (not timed), then ``beet mmgenre -f`` (timed)."""
    music = work / f"music-plugin-{round_no}"
    copy_tracks(n, music)
    beetsdir = work / f"beets-{round_no}"
    write_config(beetsdir, plugins=["mmgenre"], music=music,
                 extra=f"mmgenre:\n  auto: no\n  model: {model}\n  batch_size: {batch_size}\n"
                       f"  cache_path: {work / f'plugin-cache-{round_no}.sqlite3'}\n")
    beet(beetsdir, "import", "-A", "-q", str(music))
    (beetsdir / "write.yaml").write_text(f"import:\n  write: {'yes' if write else 'no'}\n", encoding="utf-8")
    elapsed = beet(beetsdir, "-c", str(beetsdir / "write.yaml"), "mmgenre", "-f")
    shutil.rmtree(music)
    return elapsed


def bench_throughput(work: Path, n: int, model: Path, batch_size: int, write: bool, rounds: int) -> dict:
    """``mmgenre predict`` vs ``beet mmgenre -f`` on the same n files, alternating the order each round."""
    music = work / "music"
    print(f"copying {n} tracks ...", flush=True)
    copy_tracks(n, music)
    predict_s: list[float] = []
    plugin_s: list[float] = []
    for r in range(rounds):
        for which in (("predict", "plugin") if r % 2 == 0 else ("plugin", "predict")):
            if which == "predict":
                t = _run_predict(music, n, model, batch_size, work, r)
                predict_s.append(t)
            else:
                t = _run_plugin(work, n, model, batch_size, write, r)
                plugin_s.append(t)
            print(f"round {r + 1}: {'mmgenre predict' if which == 'predict' else 'beet mmgenre -f':16s} "
                  f"{n} tracks in {t:6.1f} s ({n / t:.2f} tracks/s)", flush=True)
    med_predict, med_plugin = statistics.median(predict_s), statistics.median(plugin_s)
    ratio = med_plugin / med_predict
    print(f"median: predict {med_predict:.1f} s, plugin {med_plugin:.1f} s (write: {'yes' if write else 'no'}); "
          f"plugin / predict = {ratio:.3f} ({(ratio - 1) * 100:+.1f}%)", flush=True)
    return {"tracks": n, "batch_size": batch_size, "write": write, "rounds": rounds,
            "predict_s": [round(t, 2) for t in predict_s], "plugin_s": [round(t, 2) for t in plugin_s],
            "ratio_of_medians": round(ratio, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["overhead", "throughput"])
    parser.add_argument("--tracks", type=int, default=1000)
    parser.add_argument("--model", type=Path, help="checkpoint (default: a random paper-size model)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=7, help="runs of each beet command (overhead)")
    parser.add_argument("--rounds", type=int, default=2, help="predict/plugin pairs, order alternating")
    parser.add_argument("--no-write", action="store_true", help="plugin run with import.write: no")
    parser.add_argument("--no-bytecode", action="store_true",
                        help="do not cache compiled modules (every process compiles the plugin's source)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    global BYTECODE
    BYTECODE = not args.no_bytecode
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="mmgenre-bench-") as tmp:
        work = Path(tmp)
        if args.only in (None, "overhead"):
            results["overhead"] = bench_overhead(work, args.repeat)
        if args.only in (None, "throughput"):
            model = args.model or make_model(work / "random.pt")
            results["throughput"] = bench_throughput(work, args.tracks, model, args.batch_size, not args.no_write,
                                                     args.rounds)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
