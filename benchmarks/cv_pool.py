"""Artist-grouped cross-validation over ALL the labelled real audio in ../shared/data.

The measuring stick for the default model's next version (issue 11): every clip of
Emotify, GTZAN and the FMA sample, k folds grouped by artist (no artist on both sides
of a fold) and stratified by genre, and on the same folds:

* ``mfcc+lr``: MFCC statistics of the centre 30 s (baselines.py's) -> logistic regression;
* ``tags-zero-shot``: musicnn's 50 MSD tags mapped to FMA genres by a fixed map
  (:data:`TAG_TO_GENRE`, from FMA's own genres.csv tree), no training at all;
* ``tags+lr``: the 50 tag probabilities -> logistic regression;
* ``probe``: musicnn's 200-d penultimate features -> logistic regression (the plain
  linear probe);
* ``probe+tags``: the penultimate features and the 50 tag probabilities together;
* ``head``: the shipped model's audio head recipe on the same features: multinomial
  logistic regression over the raw penultimate features with square-root balanced
  class weights (``train.class_weight_power=0.5``) and L2 0.1 on the weighted mean loss.
  Fully balanced weights let a genre of 4-6 clips weigh 15x a genre of 80 and take over
  its neighbours (measured: 73.5% against 77.2% over three fold seeds);
* ``shipped``: the model shipped in the package, audio alone, as a user's library is
  tagged. It was trained on part of this pool, so it is scored on its own artist-disjoint
  test split and reported apart, not in the fold table.

musicnn features are the mean over the 3-s patches of four windows spread over the
file (the shipped model's own windows), so they describe the whole clip.

Prints per-method accuracy and macro-F1 (mean ± sd over folds, with paired
differences against the probe, and of ``head`` against every other method), per-genre recall and F1, and writes ``--json`` and a
confusion-matrix PNG of ``head``.

    python benchmarks/cv_pool.py [--folds 5] [--json benchmarks/results/cv_pool.json] [--png cv_pool.png]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"

# musicnn's MSD tags -> FMA top-level genres. Where FMA's genres.csv has a genre of the
# tag's name its top level is used (rock, pop, electronic, dance, House -> Electronic;
# metal, punk -> Rock; funk -> Soul-RnB; ambient, instrumental -> Instrumental; folk,
# jazz, blues, country, Hip-Hop, experimental, easy listening); compound rock styles go
# to Rock, soul and rnb to Soul-RnB, electronica and electro to Electronic, indie pop to
# Pop. Era, mood and voice tags (00s, sad, female vocalists, ...) say nothing of genre.
# No tag names Classical or International: zero-shot cannot answer them.
from mmgenre_core.open_set import TAG_TO_GENRE  # noqa: E402 - the one map, shared with the open-set score


def load_pool(data: Path) -> list[dict[str, str]]:
    """Every labelled clip: {path, genre, artist, source}."""
    pool = []
    for source, manifest, root, genre_key in [
        ("emotify", data / "emotify" / "manifest.csv", data / "emotify", "genre"),
        ("gtzan", data / "gtzan" / "manifest.csv", data / "gtzan", "genre"),
    ]:
        with open(manifest, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                pool.append({"path": str(root / row["file"]), "genre": row[genre_key],
                             "artist": row["artist"].strip().casefold(), "source": source})
    with open(data / "fma_sample" / "labels.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            tid = int(row["track_id"])
            pool.append({"path": str(data / "fma_sample" / "fma_small" / f"{tid // 1000:03d}" / f"{tid:06d}.mp3"),
                         "genre": row["genre_top"], "artist": row["artist"].strip().casefold(), "source": "fma"})
    return pool


def features(pool: list[dict[str, str]]) -> dict[str, np.ndarray]:
    """MFCC statistics [n, 80], musicnn tags [n, 50] and penultimate features [n, 200]."""
    import torch

    from benchmarks.baselines import mfcc_stats
    from mmgenre_core.audio import LogMel, load_windows
    from mmgenre_core.config import AudioConfig
    from mmgenre_core.musicnn import load_pretrained, split_patches

    torch.set_num_threads(2)
    mfcc_config = AudioConfig(sample_rate=22050, window_seconds=30.0)
    musicnn_config = AudioConfig(sample_rate=16000, n_fft=512, hop_length=256, n_mels=96, top_db=None,
                                 scale="musicnn", window_seconds=3.0, num_windows=4)
    net, logmel = load_pretrained().eval(), LogMel(musicnn_config)
    mfcc, tags, penultimate = [], [], []
    started = time.perf_counter()
    with torch.inference_mode():
        for n, clip in enumerate(pool):
            mfcc.append(mfcc_stats(clip["path"], audio_config=mfcc_config))
            windows = torch.from_numpy(load_windows(clip["path"], config=musicnn_config))
            patches, _ = split_patches(logmel(windows))
            out = net(patches)
            tags.append(torch.sigmoid(out["logits"]).mean(0).numpy())
            penultimate.append(out["penultimate"].mean(0).numpy())
            if (n + 1) % 100 == 0:
                print(f"  features of {n + 1}/{len(pool)} clips ({time.perf_counter() - started:.0f} s)", flush=True)
    return {"mfcc": np.stack(mfcc), "tags": np.stack(tags), "penultimate": np.stack(penultimate)}


def zero_shot(tags: np.ndarray, genres: list[str]) -> list[str]:
    """Each clip's genre: the one whose mapped tags add up to the most probability."""
    from mmgenre_core.musicnn import MSD_LABELS

    scores = np.zeros((len(tags), len(genres)))
    for t, label in enumerate(MSD_LABELS):
        genre = TAG_TO_GENRE.get(label)
        if genre in genres:
            scores[:, genres.index(genre)] += tags[:, t]
    return [genres[i] for i in scores.argmax(axis=1)]


def logistic(train_x: np.ndarray, train_y: list[str], test_x: np.ndarray) -> list[str]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, C=1.0, class_weight="balanced"))
    clf.fit(train_x, train_y)
    return list(clf.predict(test_x))


def sqrt_weighted_logistic(train_x: np.ndarray, train_y: list[str], test_x: np.ndarray, *,
                           l2: float = 0.1, power: float = 0.5) -> list[str]:
    """The model's head recipe: weighted-mean cross-entropy + l2/2 |W|^2, class weights
    (n / (k * count)) ** power, on the raw features (sklearn's C = 1/l2 with weights summing to 1)."""
    from sklearn.linear_model import LogisticRegression

    labels, counts = np.unique(train_y, return_counts=True)
    per_genre = dict(zip(labels, (len(train_y) / (len(labels) * counts)) ** power))
    weights = np.array([per_genre[v] for v in train_y])
    clf = LogisticRegression(max_iter=5000, C=1.0 / l2, tol=1e-6)
    clf.fit(train_x, train_y, sample_weight=weights / weights.sum())
    return list(clf.predict(test_x))


def main(argv: list[str] | None = None) -> int:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score
    from sklearn.model_selection import StratifiedGroupKFold

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--png", type=Path)
    parser.add_argument("--features", type=Path,
                        help="an .npz to keep the clips' features in (computed once, ~4 min on 2 cores)")
    args = parser.parse_args(argv)

    pool = load_pool(args.data)
    y = [c["genre"] for c in pool]
    groups = [c["artist"] for c in pool]
    genres = sorted(set(y))
    print(f"{len(pool)} clips, {len(set(groups))} artists, {len(genres)} genres: {dict(sorted(Counter(y).items()))}")
    paths = np.array([c["path"] for c in pool])
    if args.features and args.features.is_file() and np.array_equal(np.load(args.features)["paths"], paths):
        feats = {k: v for k, v in np.load(args.features).items() if k != "paths"}
    else:
        feats = features(pool)
        if args.features:
            np.savez(args.features, paths=paths, **feats)
    both = np.concatenate([feats["penultimate"], feats["tags"]], axis=1)
    folds = StratifiedGroupKFold(n_splits=args.folds, shuffle=True, random_state=args.seed)
    methods = ["mfcc+lr", "tags-zero-shot", "tags+lr", "probe", "probe+tags", "head"]
    per_fold: dict[str, list[dict[str, float]]] = defaultdict(list)
    predicted: dict[str, list[str | None]] = {m: [None] * len(pool) for m in methods}
    # Emotify alone, on the same folds: the head trained as 0.3.0 was (Emotify + FMA sample
    # clips only, fully balanced weights) against the new recipe (all clips, square-root
    # weights), both scored on the fold's Emotify clips.
    emotify_acc: dict[str, list[float]] = defaultdict(list)
    old_pool = np.array([c["source"] != "gtzan" for c in pool])
    for k, (train, test) in enumerate(folds.split(np.zeros(len(y)), y, groups)):
        assert not {groups[i] for i in train} & {groups[i] for i in test}
        emo_test = [i for i in test if pool[i]["source"] == "emotify"]
        old_train = [i for i in train if old_pool[i]]
        for name, rows, power in (("0.3.0 recipe (Emotify + FMA, balanced)", old_train, 1.0),
                                  ("new recipe (all clips, square-root weights)", list(train), 0.5)):
            pred = sqrt_weighted_logistic(feats["penultimate"][rows], [y[i] for i in rows],
                                          feats["penultimate"][emo_test], power=power)
            emotify_acc[name].append(accuracy_score([y[i] for i in emo_test], pred))
        ty = [y[i] for i in train]
        truth = [y[i] for i in test]
        answers = {
            "mfcc+lr": logistic(feats["mfcc"][train], ty, feats["mfcc"][test]),
            "tags-zero-shot": zero_shot(feats["tags"][test], genres),
            "tags+lr": logistic(feats["tags"][train], ty, feats["tags"][test]),
            "probe": logistic(feats["penultimate"][train], ty, feats["penultimate"][test]),
            "probe+tags": logistic(both[train], ty, both[test]),
            "head": sqrt_weighted_logistic(feats["penultimate"][train], ty, feats["penultimate"][test]),
        }
        for method, pred in answers.items():
            per_fold[method].append({"accuracy": accuracy_score(truth, pred),
                                     "macro_f1": f1_score(truth, pred, average="macro", zero_division=0)})
            for i, p in zip(test, pred):
                predicted[method][i] = p
        print(f"fold {k}: {len(test)} clips; " + ", ".join(f"{m} {per_fold[m][-1]['accuracy']:.3f}" for m in methods))

    print(f"\n{args.folds}-fold artist-grouped CV over {len(pool)} clips (mean ± sd over folds)")
    print(f"{'method':<16} {'accuracy':>16} {'macro-F1':>16} {'vs probe (acc)':>18}")
    summary: dict[str, dict] = {}
    probe_acc = np.array([f["accuracy"] for f in per_fold["probe"]])
    for method in methods:
        acc = np.array([f["accuracy"] for f in per_fold[method]])
        f1 = np.array([f["macro_f1"] for f in per_fold[method]])
        diff = acc - probe_acc
        summary[method] = {"accuracy_mean": float(acc.mean()), "accuracy_sd": float(acc.std(ddof=1)),
                           "macro_f1_mean": float(f1.mean()), "macro_f1_sd": float(f1.std(ddof=1)),
                           "folds": per_fold[method],
                           "per_genre_recall": dict(zip(genres, map(float, recall_score(
                               y, predicted[method], labels=genres, average=None, zero_division=0)))),
                           "per_genre_f1": dict(zip(genres, map(float, f1_score(
                               y, predicted[method], labels=genres, average=None, zero_division=0))))}
        print(f"{method:<16} {acc.mean():>8.3f} ± {acc.std(ddof=1):.3f} {f1.mean():>8.3f} ± {f1.std(ddof=1):.3f}"
              f" {diff.mean():>+9.3f} ± {diff.std(ddof=1):.3f}")
    # The model's head recipe against every other method, paired fold by fold.
    head_acc = np.array([f["accuracy"] for f in per_fold["head"]])
    head_f1 = np.array([f["macro_f1"] for f in per_fold["head"]])
    print(f"\nhead minus each method, paired by fold: accuracy, macro-F1, folds where head is better")
    summary["head_paired"] = {}
    for method in methods[:-1]:
        da = head_acc - np.array([f["accuracy"] for f in per_fold[method]])
        df = head_f1 - np.array([f["macro_f1"] for f in per_fold[method]])
        summary["head_paired"][method] = {"accuracy_diff_mean": float(da.mean()), "accuracy_diff_sd": float(da.std(ddof=1)),
                                          "macro_f1_diff_mean": float(df.mean()), "macro_f1_diff_sd": float(df.std(ddof=1)),
                                          "wins": int((da > 0).sum()), "folds": len(da)}
        print(f"  vs {method:<16} {da.mean():+.3f} ± {da.std(ddof=1):.3f}  {df.mean():+.3f} ± {df.std(ddof=1):.3f}"
              f"  {int((da > 0).sum())} of {len(da)}")
    print("\nEmotify clips alone (4 genres), same folds:")
    for name, accs in emotify_acc.items():
        print(f"  {name:<45} {np.mean(accs):.3f} ± {np.std(accs, ddof=1):.3f}  (folds: "
              + " ".join(f"{a:.3f}" for a in accs) + ")")
    summary["emotify_alone"] = {name: {"accuracy_mean": float(np.mean(a)), "accuracy_sd": float(np.std(a, ddof=1)),
                                       "folds": [float(v) for v in a]} for name, a in emotify_acc.items()}
    counts = Counter(y)
    print(f"\nper-genre recall / F1 (pooled over folds)\n{'genre':<15} {'clips':>5} " +
          " ".join(f"{m:>17}" for m in methods))
    for g in genres:
        print(f"{g:<15} {counts[g]:>5} " + " ".join(
            f"{summary[m]['per_genre_recall'][g]:>8.2f} / {summary[m]['per_genre_f1'][g]:.2f}" for m in methods))

    # The shipped model trained on part of this pool: score it on its own held-out test
    # split (artists it never saw), beside the probe's cross-validated answers on the same clips.
    from mmgenre_core.predict import GenreClassifier
    from training.config import load_config
    from training.datasets import build_dataset

    cfg = load_config(ROOT / "training" / "configs" / "default_model.json", [f"data_root={args.data}"])
    held_out = {str(Path(e.path).resolve()) for e in build_dataset(cfg).split("test") if e.path}
    test = [i for i, c in enumerate(pool) if str(Path(c["path"]).resolve()) in held_out]
    clf = GenreClassifier.load(device="cpu")
    shipped = [r.genres[0].genre if r.ok else None
               for r in clf.predict([pool[i]["path"] for i in test], use_lyrics=False, top_k=1)]
    summary["shipped_on_its_test_split"] = {"model": clf.model_id, "n": len(test), "by_source": {}}
    print(f"\nthe shipped {clf.model_id} on its own artist-disjoint test split ({len(test)} clips), "
          "against the probe's and the head's cross-validated answers on the same clips:")
    for source in sorted({pool[i]["source"] for i in test}) + ["all"]:
        rows = [k for k, i in enumerate(test) if source == "all" or pool[i]["source"] == source]
        truth = [y[test[k]] for k in rows]
        ours = float(accuracy_score(truth, [shipped[k] for k in rows]))
        probe_same = float(accuracy_score(truth, [predicted["probe"][test[k]] for k in rows]))
        head_same = float(accuracy_score(truth, [predicted["head"][test[k]] for k in rows]))
        summary["shipped_on_its_test_split"]["by_source"][source] = {"n": len(rows), "accuracy": ours,
                                                                    "probe_accuracy_same_clips": probe_same,
                                                                    "head_accuracy_same_clips": head_same}
        print(f"  {source:<8} {len(rows):>4} clips: shipped {ours:.3f}, probe (CV) {probe_same:.3f}, "
              f"head (CV) {head_same:.3f}")

    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        cm = confusion_matrix(y, predicted["head"], labels=genres)
        fig, ax = plt.subplots(figsize=(7, 6))
        ax.imshow(cm, cmap="Blues")
        ax.set_xticks(range(len(genres)), genres, rotation=60, ha="right")
        ax.set_yticks(range(len(genres)), genres)
        for (i, j), v in np.ndenumerate(cm):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"the model's head recipe, {args.folds}-fold artist-grouped CV")
        fig.tight_layout()
        fig.savefig(args.png, dpi=120)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": "python benchmarks/cv_pool.py", "clips": len(pool),
                                         "folds": args.folds, "seed": args.seed,
                                         "genres": dict(sorted(counts.items())), "methods": summary}, indent=2),
                             encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
