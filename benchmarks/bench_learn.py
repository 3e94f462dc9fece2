#!/usr/bin/env python3
"""``beet mmgenre --learn`` on a library of ``--tracks`` tagged tracks with cached features.

The library is made of the 482 labelled real clips of ../shared/data (Emotify, GTZAN,
the FMA sample), copied once into a temporary folder and hard-linked as many times as
needed to reach ``--tracks`` files (no extra disk), each tagged with its clip's genre
in GTZAN's lower-case words and its artist. The feature cache is filled by computing
the 482 clips once and letting the cache follow each hard link (``FeatureCache.follow``,
what it does for beets' copies and links), so the timed run reads every track's
features from the cache, as a rerun over an already tagged library does.

Printed: the wall time of the ``beet mmgenre --learn`` process (start, torch import,
model load, reading the library and the features, the fits and saving) and the time
of the fits alone as the command reports it.

    python benchmarks/bench_learn.py [--tracks 5000] [--json OUT]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("MMGENRE_DATA_DIR") or ROOT.parent / "shared" / "data")


def labelled_clips(data: Path = DATA) -> list[tuple[Path, str, str]]:
    """(file, genre in GTZAN's lower-case words, artist) for every labelled real clip under ``data``
    (also the library of tests/test_plugin_learn.py)."""
    rows = []
    for source in ("emotify", "gtzan"):
        with open(data / source / "manifest.csv", newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                rows.append((data / source / r["file"], (r.get("source_genre") or r["genre"]).lower(), r["artist"]))
    with open(data / "fma_sample" / "labels.csv", newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            tid = int(r["track_id"])
            rows.append((data / "fma_sample" / "fma_small" / f"{tid // 1000:03d}" / f"{tid:06d}.mp3",
                         r["genre_top"].lower(), r["artist"]))
    return rows


def build(work: Path, n: int) -> tuple[Path, Path]:
    from beets.library import Item, Library

    from mmgenre_core.feature_cache import FeatureCache
    from mmgenre_core.predict import GenreClassifier

    clips = labelled_clips()
    originals = work / "originals"
    originals.mkdir()
    copies = []
    for i, (src, genre, artist) in enumerate(clips):
        dst = originals / f"{i:04d}{src.suffix}"
        shutil.copyfile(src, dst)
        copies.append((dst, genre, artist))
    cache_path = work / "features.sqlite3"
    cache = FeatureCache(cache_path)
    started = time.perf_counter()
    clf = GenreClassifier.load(None, feature_cache=cache)
    for _ in clf.iter_features([str(c[0]) for c in copies]):
        pass
    print(f"features of {len(copies)} clips computed in {time.perf_counter() - started:.0f} s", flush=True)
    music = work / "music"
    lib = Library(str(work / "library.db"), str(music))
    for k in range(n):
        src, genre, artist = copies[k % len(copies)]
        dst = music / f"{k // 500:02d}" / f"{k:05d}{src.suffix}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.link(src, dst)
        cache.follow(src, dst)
        item = Item.from_path(str(dst))
        item.genres = [genre]
        item.artist = artist
        item.add(lib)
    lib._close()
    cache.close()
    beetsdir = work / "beets"
    beetsdir.mkdir()
    (beetsdir / "config.yaml").write_text(
        f"directory: {music}\nlibrary: {work / 'library.db'}\nplugins: [mmgenre]\n"
        f"mmgenre:\n  auto: no\n  cache_path: {cache_path}\n  genre_map:\n    Hip-Hop: hiphop\n", encoding="utf-8")
    return beetsdir, cache_path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=5000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mmgenre-learn-") as tmp:
        work = Path(tmp)
        beetsdir, _ = build(work, args.tracks)
        env = {**os.environ, "BEETSDIR": str(beetsdir), "HOME": str(beetsdir),
               "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
        cmd = [sys.executable, "-c", "import sys; from beets.ui import main; sys.exit(main())",
               "-v", "mmgenre", "--learn", "--pretend"]
        started = time.perf_counter()
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if out.returncode != 0:
            raise SystemExit(f"beet mmgenre --learn failed:\n{out.stderr[-3000:]}")
        fit = re.search(r"from (\d+) tracks in ([0-9.]+) s", out.stdout)
        load = re.search(r"loaded in ([0-9.]+) s", out.stderr)
        report = out.stdout[out.stdout.index("learnt"):] if "learnt" in out.stdout else out.stdout
        print(report)
        result = {"tracks": args.tracks, "wall_s": round(wall, 1),
                  "fit_s": float(fit.group(2)) if fit else None,
                  "model_load_s": float(load.group(1)) if load else None}
        print(f"beet mmgenre --learn on {args.tracks} tagged tracks with cached features: {wall:.1f} s end to end "
              f"(fits {result['fit_s']} s; model load {result['model_load_s']} s)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
