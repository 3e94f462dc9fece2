"""What reading lyrics costs: two models side by side, interleaved in one process.

For each model (``--model``, repeatable; default: the shipped one), on real songs of
``lyrics_large`` and real clips of ../shared/data:

* model load time (the checkpoint read and the model built);
* lyrics alone: songs per second of ``GenreClassifier.predict_lyrics``;
* a track with lyrics: tracks per second of ``GenreClassifier.predict`` on GTZAN's 30-s clips,
  each given the lyrics of a ``lyrics_large`` song of its genre (a stand-in for its own), against
  the same clips without lyrics, and the windows a track was heard at in each (lyrics change
  how sure the model is, so how many rounds it listens).

Runs are interleaved (model A, model B, A, B, ...) so both see the same machine state, and
each figure is the best of ``--repeat``.

    python benchmarks/bench_lyrics.py --model OLD.pt --model NEW.pt [--songs 400] [--clips 32] [--repeat 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", action="append", type=Path, help="a checkpoint (repeat for several; default: shipped)")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--songs", type=int, default=400)
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    from mmgenre_core.predict import GenreClassifier, default_model_path

    models = args.model or [Path(default_model_path())]
    with open(args.data / "lyrics_large" / "lyrics.jsonl", encoding="utf-8") as fh:
        songs = [json.loads(line) for line in fh]
    texts = [s["lyrics"] for s in songs[:args.songs]]
    with open(args.data / "gtzan" / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[::3][:args.clips]  # every third: several artists and genres
    clips = [str(args.data / "gtzan" / r["file"]) for r in rows]
    by_genre: dict[str, list[str]] = {}
    for s in songs:
        if not s.get("text_form"):  # full texts, as a track's own lyrics are
            by_genre.setdefault(s["genre"], []).append(s["lyrics"])
    # Classical has no lyrics: its clips stay instrumental, as such tracks are.
    paired = [by_genre[r["genre"]][i] if r["genre"] in by_genre else None for i, r in enumerate(rows)]
    best: dict[str, dict[str, float]] = {str(m): {} for m in models}

    def keep(model: Path, name: str, value: float) -> None:
        slot = best[str(model)]
        slot[name] = max(slot.get(name, 0.0), value) if name != "load_s" else min(slot.get(name, 1e9), value)

    for _ in range(args.repeat):
        for model in models:
            t0 = time.perf_counter()
            clf = GenreClassifier.load(model, device="cpu")
            keep(model, "load_s", time.perf_counter() - t0)
            t0 = time.perf_counter()
            clf.predict_lyrics(texts)
            keep(model, "songs_per_s", len(texts) / (time.perf_counter() - t0))
            for name, lyrics in (("clips_per_s", None), ("clips_with_lyrics_per_s", paired)):
                t0 = time.perf_counter()
                out = clf.predict(clips, lyrics=lyrics)
                keep(model, name, len(clips) / (time.perf_counter() - t0))
                best[str(model)][name.replace("per_s", "windows")] = sum(r.windows for r in out) / len(out)
            del clf
    for model, row in best.items():
        print(f"{model}: load {row['load_s']:.2f} s, lyrics alone {row['songs_per_s']:.0f} songs/s, clips "
              f"{row['clips_per_s']:.1f}/s ({row['clips_windows']:.2f} windows), with lyrics "
              f"{row['clips_with_lyrics_per_s']:.1f}/s ({row['clips_with_lyrics_windows']:.2f} windows)")
    if args.json:
        args.json.write_text(json.dumps({"songs": len(texts), "clips": len(clips), "repeat": args.repeat,
                                         "best": best}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
