"""Artist-grouped cross-validation of whole audio training recipes, against the probe and the head.

A recipe is what ``training/train.py`` makes from a config: the shipped one
(``training/configs/default_model.json``: frozen musicnn features of windows heard in rounds,
heads fitted by an inner CV), or 0.4.1's (``training/configs/default_model_0.4.1.json``: linear
probe, then fine-tuning on 3-s crops with the HAN and modality dropout, the best epoch on a
validation split, calibration). This runs ``train.py``'s own ``train()`` once per fold and
recipe, on every labelled clip of ``../shared/data`` (Emotify, GTZAN, the FMA sample) but the
fold's test clips, and scores the model it makes the way a user's library is tagged
(``GenreClassifier.predict``, audio alone, the whole file, the default listening plan; its
top genre, also when the open-set score would leave the track untagged), side by side on the
same test clips with:

* ``probe``: the plain linear probe (standardised musicnn 200-d features, fully balanced
  logistic regression), as a new user would fit it;
* ``head``: a head over the same features (raw features, square-root class weights, L2 0.1:
  ``cv_pool.sqrt_weighted_logistic``);
* ``tags-zero-shot``: musicnn's own MSD tags through cv_pool's fixed tag-to-genre map.

Every score is also given per source (Emotify, GTZAN, FMA clips alone), so that a recipe is
seen not to buy its total on one source with another.

Folds: ``StratifiedGroupKFold`` by artist and genre (cv_pool's folds for the same seed); a
recipe whose config asks for a validation split gets an artist-grouped part of the training
fold for it, and the probe and head train on all of the training fold. The features are
cv_pool's (the mean over the 3-s patches of four windows spread over the file).

    python benchmarks/cv_audio.py [--recipe NAME=CONFIG ...] [--folds 5] [--seed 0]
                                  [--features FILE.npz] [--set KEY=VALUE ...] [--json FILE]
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
from benchmarks.cv_pool import (DATA, features, load_pool, logistic, sqrt_weighted_logistic,  # noqa: E402
                                zero_shot)

DEFAULT_CONFIG = ROOT / "training" / "configs" / "default_model.json"
#: Compared with every recipe on the same folds (see the module docstring).
BASELINES = ("probe", "head", "tags-zero-shot")


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


def recipe_predictions(model: Path, paths: list[str]) -> tuple[list[str | None], list[bool]]:
    """The trained model's top genre of each file, audio alone, as a library is tagged (its
    default listening plan), and whether the open-set score found it unfamiliar."""
    from mmgenre_core.predict import GenreClassifier

    clf = GenreClassifier.load(model, device="cpu")
    results = clf.predict(paths, use_lyrics=False)
    return [r.genres[0].genre if r.genres else None for r in results], [r.unfamiliar for r in results]


def scores(truth: list[str], predicted: list[str | None]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    answered = [p if p is not None else "<none>" for p in predicted]
    return {"accuracy": float(accuracy_score(truth, answered)),
            "macro_f1": float(f1_score(truth, answered, labels=sorted(set(truth)), average="macro", zero_division=0))}


def scores_by_source(truth: list[str], predicted: list[str | None], sources: list[str]) -> dict[str, dict]:
    """:func:`scores` of each source's clips alone (macro-F1 over the genres that source has),
    with their count ``n``."""
    out = {}
    for source in sorted(set(sources)):
        rows = [i for i, s in enumerate(sources) if s == source]
        out[source] = {"n": len(rows), **scores([truth[i] for i in rows], [predicted[i] for i in rows])}
    return out


def parse_recipes(specs: list[str]) -> list[tuple[str, Path]]:
    """``NAME=CONFIG`` pairs, in order; the shipped config alone when none is given."""
    if not specs:
        return [("shipped", DEFAULT_CONFIG)]
    recipes = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path or name in BASELINES:
            raise SystemExit(f"--recipe wants NAME=CONFIG with a name other than {', '.join(BASELINES)}: {spec!r}")
        recipes.append((name, Path(path)))
    if len({n for n, _ in recipes}) != len(recipes):
        raise SystemExit("--recipe: each recipe needs its own name")
    return recipes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", dest="recipes", action="append", default=[], metavar="NAME=CONFIG",
                   help="a training config to cross-validate under a name (repeat to compare several on the "
                        "same folds; default: shipped=training/configs/default_model.json)")
    p.add_argument("--config", type=Path, help="the same as --recipe recipe=CONFIG")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override every recipe's training config (as train.py --set)")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--features", type=Path, help="an .npz to keep the clips' features in (cv_pool's)")
    p.add_argument("--json", type=Path, help="write every fold's numbers and the summary here")
    args = p.parse_args(argv)
    if args.config:
        args.recipes.append(f"recipe={args.config}")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from mmgenre_core.native_stderr import filtered_native_stderr

    with filtered_native_stderr():  # libmpg123's noise on some GTZAN MP3s
        return _run(args, parse_recipes(args.recipes))


def _differences(rows: list[dict], a: str, b: str, key: str | None = None) -> dict[str, dict]:
    """a minus b, fold by fold (within one source when ``key`` is given)."""
    def pick(row: dict, m: str) -> dict:
        return row[m] if key is None else row["by_source"][key][m]

    return {metric: summarise([pick(r, a)[metric] - pick(r, b)[metric] for r in rows])
            | {"folds_above": sum(pick(r, a)[metric] > pick(r, b)[metric] for r in rows),
               "folds_below": sum(pick(r, a)[metric] < pick(r, b)[metric] for r in rows)}
            for metric in ("accuracy", "macro_f1")}


def _run(args: argparse.Namespace, recipes: list[tuple[str, Path]]) -> int:
    from sklearn.metrics import recall_score

    from training.config import load_config

    pool = load_pool(args.data)
    y = [c["genre"] for c in pool]
    groups = [c["artist"] for c in pool]
    sources = [c["source"] for c in pool]
    paths = np.array([c["path"] for c in pool])
    if args.features and args.features.is_file() and np.array_equal(np.load(args.features)["paths"], paths):
        cached = np.load(args.features)
        feats, tags = cached["penultimate"], cached["tags"]
    else:
        computed = features(pool)
        feats, tags = computed["penultimate"], computed["tags"]
        if args.features:
            np.savez(args.features, paths=paths, **computed)
    # Each recipe's own validation split: none when its config asks for none (the frozen-heads
    # recipe's inner CV takes its place); the outer folds' test clips are the same for all.
    splits: dict[str, list[list[str]]] = {}
    for name, config in recipes:
        valid_fraction = load_config(config, args.overrides).data.valid_fraction
        parts = max(2, round(1 / valid_fraction)) if valid_fraction > 0 else 2
        fold_list = fold_splits(y, groups, folds=args.folds, seed=args.seed, valid_parts=parts)
        splits[name] = fold_list if valid_fraction > 0 else [[("train" if s == "valid" else s) for s in split]
                                                             for split in fold_list]
    names = [n for n, _ in recipes]
    methods = [*names, *BASELINES]
    genres = sorted(set(y))
    print(f"{len(pool)} clips, {len(set(groups))} artists, {args.folds} folds (seed {args.seed}); "
          f"recipes: {', '.join(f'{n} ({c})' for n, c in recipes)}", flush=True)

    rows, truth_all, sources_all = [], [], []
    predicted_all: dict[str, list] = defaultdict(list)
    started = time.perf_counter()
    for k in range(args.folds):
        t0 = time.perf_counter()
        test_sets = {name: [i for i, s in enumerate(splits[name][k]) if s == "test"] for name in names}
        test = test_sets[names[0]]
        assert all(t == test for t in test_sets.values())
        tested = set(test)
        fit = [i for i in range(len(pool)) if i not in tested]
        assert not {groups[i] for i in fit} & {groups[i] for i in test}
        truth = [y[i] for i in test]
        answers, unfamiliar = {}, {}
        for name, config in recipes:
            with tempfile.TemporaryDirectory(prefix="cv_audio_") as tmp:
                model = train_recipe(config, args.overrides, pool, splits[name][k], Path(tmp))
                answers[name], flags = recipe_predictions(model, [pool[i]["path"] for i in test])
            unfamiliar[name] = float(np.mean(flags))
        answers["probe"] = logistic(feats[fit], [y[i] for i in fit], feats[test])
        answers["head"] = sqrt_weighted_logistic(feats[fit], [y[i] for i in fit], feats[test])
        answers["tags-zero-shot"] = zero_shot(tags[test], genres)
        test_sources = [sources[i] for i in test]
        per_method = {m: scores_by_source(truth, answers[m], test_sources) for m in methods}
        row = {"fold": k, "n": len(test), **{m: scores(truth, answers[m]) for m in methods},
               "unfamiliar_share": unfamiliar,
               "by_source": {src: {m: per_method[m][src] for m in methods} for src in sorted(set(test_sources))}}
        rows.append(row)
        truth_all += truth
        sources_all += test_sources
        for m in methods:
            predicted_all[m] += [a if a is not None else "<none>" for a in answers[m]]
        print(f"fold {k}: " + "  ".join(f"{m} {row[m]['accuracy'] * 100:.1f}% / {row[m]['macro_f1']:.3f}"
                                        for m in methods)
              + f"  ({len(test)} clips, {time.perf_counter() - t0:.0f} s)", flush=True)
        for src, by in row["by_source"].items():
            print(f"  {src:8s} ({by[methods[0]]['n']:3d}): "
                  + "  ".join(f"{m} {by[m]['accuracy'] * 100:.1f}%" for m in methods), flush=True)

    summary: dict[str, dict] = {m: {metric: summarise([r[m][metric] for r in rows]) for metric in
                                    ("accuracy", "macro_f1")} for m in methods}
    pairs = [(a, b) for i, a in enumerate(names) for b in [*names[i + 1:], "probe", "head"]] + [("head", "probe")]
    for a, b in pairs:
        summary[f"{a} - {b}"] = _differences(rows, a, b)
    by_source: dict[str, dict] = {}
    for src in sorted(set(sources_all)):
        idx = [i for i, s in enumerate(sources_all) if s == src]
        by_source[src] = {"clips": len(idx),
                          "pooled": {m: scores([truth_all[i] for i in idx], [predicted_all[m][i] for i in idx])
                                     for m in methods},
                          "folds": {m: {metric: summarise([r["by_source"][src][m][metric] for r in rows
                                                           if src in r["by_source"]])
                                        for metric in ("accuracy", "macro_f1")} for m in methods},
                          "differences": {f"{a} - {b}": _differences([r for r in rows if src in r["by_source"]],
                                                                       a, b, key=src) for a, b in pairs}}
    counts = Counter(truth_all)
    recall = {m: dict(zip(genres, recall_score(truth_all, predicted_all[m], labels=genres, average=None,
                                               zero_division=0).tolist())) for m in methods}
    print(f"\n{len(rows)} folds (mean ± sd), {time.perf_counter() - started:.0f} s in all:")
    for m in methods:
        acc, f1 = summary[m]["accuracy"], summary[m]["macro_f1"]
        print(f"  {m:14s} accuracy {acc['mean'] * 100:.1f}% ± {acc['sd'] * 100:.1f}  "
              f"macro-F1 {f1['mean']:.3f} ± {f1['sd']:.3f}")
    for a, b in pairs:
        _print_difference(f"{a} - {b}", summary[f"{a} - {b}"])
    for src, part in by_source.items():
        print(f"  {src} clips alone ({part['clips']}; pooled over the folds):")
        for m in methods:
            pooled = part["pooled"][m]
            print(f"    {m:14s} accuracy {pooled['accuracy'] * 100:.1f}%  macro-F1 {pooled['macro_f1']:.3f}")
        for a, b in pairs:
            _print_difference(f"  {a} - {b}", part["differences"][f"{a} - {b}"])
    for name in names:
        print(f"  {name}: left untagged as unfamiliar (open set) "
              f"{np.mean([r['unfamiliar_share'][name] for r in rows]) * 100:.1f}% of the test clips "
              "(scored above by their top genre all the same)")
    print("  recall per genre (pooled; clips):")
    for g in genres:
        print(f"    {g:14s} {counts[g]:4d}  " + "  ".join(f"{m} {recall[m][g]:.2f}" for m in methods))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"recipes": {n: str(c) for n, c in recipes}, "overrides": args.overrides,
                                         "folds": args.folds, "seed": args.seed, "rows": rows,
                                         "summary": summary, "by_source": by_source, "recall": recall,
                                         "counts": dict(counts)}, indent=2) + "\n", encoding="utf-8")
    return 0


def _print_difference(label: str, diff: dict) -> None:
    acc, f1 = diff["accuracy"], diff["macro_f1"]
    print(f"  {label:24s} accuracy {acc['mean'] * 100:+.1f} ± {acc['sd'] * 100:.1f}  macro-F1 "
          f"{f1['mean']:+.3f} ± {f1['sd']:.3f}  (above / below on {acc['folds_above']} / {acc['folds_below']} "
          f"folds in accuracy, {f1['folds_above']} / {f1['folds_below']} in macro-F1)")


if __name__ == "__main__":
    sys.exit(main())
