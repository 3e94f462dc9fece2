"""Artist-grouped cross-validation of the model's lyrics branch against TF-IDF + LR.

Issue 11's bar for the lyrics: on songs by artists it never saw, the lyrics branch must
beat TF-IDF + logistic regression in accuracy and macro-F1. One held-out split of ~80
songs cannot tell (one song is 1.25 points), so this trains the default model's lyrics
branch once per fold, exactly as ``training/train.py`` trains it (linear probe, then
fine-tuning with the HAN, best epoch on an inner validation split, calibration), and on
the same folds fits:

* ``tfidf-raw``: TF-IDF (1-2-grams) + logistic regression on the raw text
  (benchmarks/baselines.py's baseline);
* ``tfidf-clean``: the same on the text the model reads (Genius headers and section
  labels removed; the raw text lets TF-IDF learn which site a lyric was scraped from).

Folds: ``StratifiedGroupKFold`` over the corpus, grouped by training's own rule
(``training.datasets.artist_group``: a song without an artist is its own group) and
stratified by genre; inside each
training fold an artist-grouped sixth is the model's validation split. The baselines
train on the whole training fold (training + validation): all the songs the model saw.
Every method is scored on the same test songs, those with words left after cleaning.

    python benchmarks/cv_lyrics.py [--folds 5] [--seeds 0 1 2] [--set model.lyrics_mean_vector=false] \\
        [--json benchmarks/results/cv_lyrics.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.baselines import lyrics_baseline  # noqa: E402
from mmgenre_core.text import has_words  # noqa: E402
from training.config import load_config, resolve_path  # noqa: E402
from training.datasets import artist_group  # noqa: E402
from training.lyrics_data import read_jsonl, standalone_examples  # noqa: E402

DEFAULT_CONFIG = ROOT / "training" / "configs" / "default_model.json"
BASELINES = {"tfidf-raw": False, "tfidf-clean": True}


def fold_splits(genres: list[str], groups: list[str], *, folds: int, seed: int,
                valid_parts: int) -> list[list[str]]:
    """For each fold, the split of every song ('train', 'valid' or 'test'), from the
    songs' genres and artist groups."""
    from sklearn.model_selection import StratifiedGroupKFold

    genres_a, groups_a = np.asarray(genres), np.asarray(groups)
    out = []
    outer = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train_idx, test_idx in outer.split(np.zeros(len(genres_a)), genres_a, groups_a):
        inner = StratifiedGroupKFold(n_splits=valid_parts, shuffle=True, random_state=seed)
        _, valid_pos = next(inner.split(np.zeros(len(train_idx)), genres_a[train_idx], groups_a[train_idx]))
        split = ["train"] * len(genres_a)
        for i in train_idx[valid_pos]:
            split[i] = "valid"
        for i in test_idx:
            split[i] = "test"
        out.append(split)
    return out


def train_fold(config: Path, overrides: list[str], records: list[dict], split: list[str], work: Path) -> dict:
    """Train the lyrics branch on one fold with training/train.py's train(); its test metrics."""
    from training.train import train

    work.mkdir(parents=True, exist_ok=True)
    lyrics = work / "lyrics.jsonl"
    with open(lyrics, "w", encoding="utf-8") as fh:
        for rec, s in zip(records, split):
            fh.write(json.dumps({k: v for k, v in rec.items() if not k.startswith("_")} | {"split": s}) + "\n")
    source = {"type": "jsonl", "name": "lyrics", "path": str(lyrics), "standalone": True}
    cfg = load_config(config, ["data.audio=[]", f"data.lyrics={json.dumps([source])}", *overrides])
    train(cfg, work / "run", progress=False)
    metrics = json.loads((work / "run" / "metrics.json").read_text(encoding="utf-8"))
    test = metrics["test"]["lyrics"]
    return {"accuracy": test["accuracy"], "macro_f1": test["macro_f1"], "n": test["n"],
            "best_epoch": metrics["best_epoch"], "probe_l2": metrics.get("linear_probe", {}).get("l2")}


def summarise(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override the model's training config (as train.py --set)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--json", type=Path, help="write every fold's numbers and the summary here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    cfg = load_config(args.config, args.overrides)
    standalone = [s for s in cfg.data.lyrics if s.get("standalone")]
    if len(standalone) != 1:
        p.error("the config needs exactly one standalone lyrics source")
    path = resolve_path(standalone[0]["path"])
    records = [r for r in read_jsonl(path) if isinstance(r.get("genre"), str) and r["genre"].strip()]
    examples = standalone_examples(records, standalone[0], base=path.parent)  # as training reads them
    genres, groups = [e.genre for e in examples], [artist_group(e) for e in examples]
    valid_parts = max(2, round(1 / cfg.data.valid_fraction))
    print(f"{len(records)} songs, {len(set(groups))} artist groups, "
          f"{args.folds} folds x seeds {args.seeds}", flush=True)

    rows = []
    started = time.perf_counter()
    for seed in args.seeds:
        for k, split in enumerate(fold_splits(genres, groups, folds=args.folds, seed=seed, valid_parts=valid_parts)):
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix="cv_lyrics_") as tmp:
                model = train_fold(args.config, args.overrides, records, split, Path(tmp))
            fit = [e for e, s in zip(examples, split) if s != "test"]
            test = [e for e, s in zip(examples, split) if s == "test" and has_words(e.lyrics)]
            row = {"seed": seed, "fold": k, "model": model}
            for name, cleaned in BASELINES.items():
                row[name] = lyrics_baseline(fit, test, cleaned=cleaned)
            if row["tfidf-raw"]["n"] != model["n"]:
                raise RuntimeError(f"fold {k}: the model was tested on {model['n']} songs, the baselines on "
                                   f"{row['tfidf-raw']['n']}")
            rows.append(row)
            print(f"seed {seed} fold {k}: " + "  ".join(
                f"{m} {row[m]['accuracy'] * 100:.1f}% / {row[m]['macro_f1']:.3f}" for m in ("model", *BASELINES))
                + f"  ({model['n']} songs, {time.perf_counter() - t0:.0f} s)", flush=True)

    summary: dict[str, dict] = {}
    for m in ("model", *BASELINES):
        summary[m] = {metric: summarise([r[m][metric] for r in rows]) for metric in ("accuracy", "macro_f1")}
    for b in BASELINES:
        summary[f"model - {b}"] = {
            metric: summarise([r["model"][metric] - r[b][metric] for r in rows]) | {
                "folds_above": sum(r["model"][metric] > r[b][metric] for r in rows)}
            for metric in ("accuracy", "macro_f1")}
    print(f"\n{len(rows)} test folds (mean ± sd over folds), {time.perf_counter() - started:.0f} s in all:")
    for m in ("model", *BASELINES):
        acc, f1 = summary[m]["accuracy"], summary[m]["macro_f1"]
        print(f"  {m:24s} accuracy {acc['mean'] * 100:.1f}% ± {acc['sd'] * 100:.1f}  "
              f"macro-F1 {f1['mean']:.3f} ± {f1['sd']:.3f}")
    for b in BASELINES:
        acc, f1 = summary[f"model - {b}"]["accuracy"], summary[f"model - {b}"]["macro_f1"]
        print(f"  model - {b:16s} accuracy {acc['mean'] * 100:+.1f} ± {acc['sd'] * 100:.1f}  "
              f"macro-F1 {f1['mean']:+.3f} ± {f1['sd']:.3f}  (model above on {acc['folds_above']} / "
              f"{f1['folds_above']} of {len(rows)} folds)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"config": str(args.config), "overrides": args.overrides,
                                         "folds": args.folds, "seeds": args.seeds, "rows": rows,
                                         "summary": summary}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
