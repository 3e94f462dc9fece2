"""Artist-grouped cross-validation of the whole audio training recipe, against the probe and the head.

What ships is what ``training/train.py`` makes (linear probe, then fine-tuning on 3-s crops
with the HAN and modality dropout, the best epoch on a validation split, calibration), not
the head over frozen features that ``benchmarks/cv_pool.py`` validates. This runs
``train.py``'s own ``train()`` once per fold, on every labelled clip of ``../shared/data``
(Emotify, GTZAN, the FMA sample) but the fold's test clips, and scores the model it makes
the way a user's library is tagged (``GenreClassifier.predict``, audio alone, the whole
file), side by side on the same test clips with:

* ``probe``: the plain linear probe (standardised musicnn 200-d features, fully balanced
  logistic regression), as a new user would fit it;
* ``head``: the shipped head recipe on the same features (raw features, square-root class
  weights, L2 0.1: ``cv_pool.sqrt_weighted_logistic``).

Folds: ``StratifiedGroupKFold`` by artist and genre (cv_pool's folds for the same seed);
inside each training fold an artist-grouped part is the recipe's validation split, and the
probe and head train on all of the training fold. The features are cv_pool's (the mean over
the 3-s patches of four windows spread over the file).

    python benchmarks/cv_audio.py [--folds 5] [--seed 0] [--features FILE.npz] [--set KEY=VALUE ...]
                                  [--json benchmarks/results/cv_audio.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.cv_lyrics import fold_splits, summarise  # noqa: E402 - the same folds' rule
from benchmarks.cv_pool import DATA, features, load_pool, logistic, sqrt_weighted_logistic  # noqa: E402

DEFAULT_CONFIG = ROOT / "training" / "configs" / "default_model.json"
METHODS = ("recipe", "probe", "head")


def write_fold_manifest(pool: list[dict], split: list[str], path: Path) -> dict:
    """One fold as a training manifest (absolute paths, the clips' genres, artists and
    splits); returns the config's audio source for it."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "genre", "artist", "split"])
        for clip, s in zip(pool, split):
            writer.writerow([clip["path"], clip["genre"], clip["artist"], s])
    return {"type": "manifest", "name": "pool", "path": str(path), "root": "/"}


def train_recipe(config: Path, overrides: list[str], pool: list[dict], split: list[str], work: Path) -> Path:
    """Train the recipe on one fold with training/train.py's train(); the model's path."""
    from training.config import load_config
    from training.train import train

    work.mkdir(parents=True, exist_ok=True)
    source = write_fold_manifest(pool, split, work / "audio.csv")
    cfg = load_config(config, [f"data.audio={json.dumps([source])}", *overrides])
    train(cfg, work / "run", progress=False)
    return work / "run" / "model.pt"


def recipe_predictions(model: Path, paths: list[str]) -> list[str | None]:
    """The trained model's top genre of each file, audio alone, as a library is tagged."""
    from mmgenre_core.predict import GenreClassifier

    clf = GenreClassifier.load(model, device="cpu")
    return [r.genres[0].genre if r.genres else None for r in clf.predict(paths, use_lyrics=False)]


def scores(truth: list[str], predicted: list[str | None]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    answered = [p if p is not None else "<none>" for p in predicted]
    return {"accuracy": float(accuracy_score(truth, answered)),
            "macro_f1": float(f1_score(truth, answered, labels=sorted(set(truth)), average="macro", zero_division=0))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override the recipe's training config (as train.py --set)")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--features", type=Path, help="an .npz to keep the clips' features in (cv_pool's)")
    p.add_argument("--json", type=Path, help="write every fold's numbers and the summary here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from mmgenre_core.native_stderr import filtered_native_stderr

    with filtered_native_stderr():  # libmpg123's noise on some GTZAN MP3s
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from sklearn.metrics import recall_score

    from training.config import load_config

    pool = load_pool(args.data)
    y = [c["genre"] for c in pool]
    groups = [c["artist"] for c in pool]
    paths = np.array([c["path"] for c in pool])
    if args.features and args.features.is_file() and np.array_equal(np.load(args.features)["paths"], paths):
        feats = np.load(args.features)["penultimate"]
    else:
        computed = features(pool)
        feats = computed["penultimate"]
        if args.features:
            np.savez(args.features, paths=paths, **computed)
    cfg = load_config(args.config, args.overrides)
    valid_parts = max(2, round(1 / cfg.data.valid_fraction))
    print(f"{len(pool)} clips, {len(set(groups))} artists, {args.folds} folds (seed {args.seed})", flush=True)

    rows, truth_all = [], []
    predicted_all: dict[str, list] = defaultdict(list)
    started = time.perf_counter()
    for k, split in enumerate(fold_splits(y, groups, folds=args.folds, seed=args.seed, valid_parts=valid_parts)):
        t0 = time.perf_counter()
        fit = [i for i, s in enumerate(split) if s != "test"]
        test = [i for i, s in enumerate(split) if s == "test"]
        assert not {groups[i] for i in fit} & {groups[i] for i in test}
        truth = [y[i] for i in test]
        with tempfile.TemporaryDirectory(prefix="cv_audio_") as tmp:
            model = train_recipe(args.config, args.overrides, pool, split, Path(tmp))
            answers = {"recipe": recipe_predictions(model, [pool[i]["path"] for i in test])}
        answers["probe"] = logistic(feats[fit], [y[i] for i in fit], feats[test])
        answers["head"] = sqrt_weighted_logistic(feats[fit], [y[i] for i in fit], feats[test])
        row = {"fold": k, "n": len(test), **{m: scores(truth, answers[m]) for m in METHODS}}
        rows.append(row)
        truth_all += truth
        for m in METHODS:
            predicted_all[m] += [a if a is not None else "<none>" for a in answers[m]]
        print(f"fold {k}: " + "  ".join(f"{m} {row[m]['accuracy'] * 100:.1f}% / {row[m]['macro_f1']:.3f}"
                                        for m in METHODS)
              + f"  ({len(test)} clips, {time.perf_counter() - t0:.0f} s)", flush=True)

    summary: dict[str, dict] = {m: {metric: summarise([r[m][metric] for r in rows]) for metric in
                                    ("accuracy", "macro_f1")} for m in METHODS}
    for a, b in (("recipe", "probe"), ("recipe", "head"), ("head", "probe")):
        summary[f"{a} - {b}"] = {metric: summarise([r[a][metric] - r[b][metric] for r in rows])
                                 | {"folds_above": sum(r[a][metric] > r[b][metric] for r in rows)}
                                 for metric in ("accuracy", "macro_f1")}
    counts = Counter(truth_all)
    genres = sorted(counts)
    recall = {m: dict(zip(genres, recall_score(truth_all, predicted_all[m], labels=genres, average=None,
                                               zero_division=0).tolist())) for m in METHODS}
    print(f"\n{len(rows)} folds (mean ± sd), {time.perf_counter() - started:.0f} s in all:")
    for m in METHODS:
        acc, f1 = summary[m]["accuracy"], summary[m]["macro_f1"]
        print(f"  {m:8s} accuracy {acc['mean'] * 100:.1f}% ± {acc['sd'] * 100:.1f}  "
              f"macro-F1 {f1['mean']:.3f} ± {f1['sd']:.3f}")
    for pair in ("recipe - probe", "recipe - head", "head - probe"):
        acc, f1 = summary[pair]["accuracy"], summary[pair]["macro_f1"]
        print(f"  {pair:16s} accuracy {acc['mean'] * 100:+.1f} ± {acc['sd'] * 100:.1f}  macro-F1 "
              f"{f1['mean']:+.3f} ± {f1['sd']:.3f}  (above on {acc['folds_above']} / {f1['folds_above']} folds)")
    print("  recall per genre (pooled; clips):")
    for g in genres:
        print(f"    {g:14s} {counts[g]:4d}  " + "  ".join(f"{m} {recall[m][g]:.2f}" for m in METHODS))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"config": str(args.config), "overrides": args.overrides,
                                         "folds": args.folds, "seed": args.seed, "rows": rows,
                                         "summary": summary, "recall": recall, "counts": dict(counts)},
                                        indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
