"""The model against classic baselines, on the same artist-disjoint held-out split.

* audio: MFCC statistics (20 MFCCs + deltas, mean and standard deviation over the
  analysed 30-s window) -> standardised -> logistic regression;
* lyrics: TF-IDF (word uni- and bigrams, sublinear tf) -> logistic regression;
* audio: musicnn's 50 MSD tag probabilities (mean over the window's 3-s patches) ->
  standardised -> logistic regression (the transfer baseline of issue 6);
* the model(s): audio alone (no lyrics) and lyrics alone (no audio) through
  ``GenreClassifier``, argmax over every genre the model can output, exactly as a
  user's library is tagged (the checkpoint's own windows).

The split is the training config's own (``training.datasets.build_dataset``), so the
baselines and the model are trained on the same examples and tested on the same
held-out artists.

Usage::

    python benchmarks/baselines.py --config training/configs/default_model.json \\
        [--model CKPT [--model CKPT2 ...]] [--split test] [--json OUT]
    python benchmarks/baselines.py --split-seeds 0 1 2 3 [--config A.json --config B.json] [--runs runs/baselines]

A test split of a few dozen clips is noisy (one clip is 2.4 points of accuracy), so
``--split-seeds`` repeats the comparison on several artist-disjoint splits, training
the config's model on each (about 10 minutes per split on 2 CPU cores), and prints
the mean and spread over splits.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def mfcc_stats(path: str, *, audio_config) -> np.ndarray:
    """[shape=(80,)]: mean and std of 20 MFCCs and their deltas over the analysed window."""
    import librosa

    from mmgenre_core.audio import load_windows

    y = load_windows(path, config=audio_config)[0]
    mfcc = librosa.feature.mfcc(y=y, sr=audio_config.sample_rate, n_mfcc=20)
    feats = np.concatenate([mfcc, librosa.feature.delta(mfcc)])
    return np.concatenate([feats.mean(axis=1), feats.std(axis=1)])


def musicnn_tags(path: str, *, model, logmel, audio_config) -> np.ndarray:
    """[shape=(50,)]: musicnn's MSD tag probabilities, mean over the 3-s patches of the window."""
    import torch

    from mmgenre_core.audio import load_windows
    from mmgenre_core.musicnn import split_patches

    with torch.inference_mode():
        patches, _ = split_patches(logmel(torch.from_numpy(load_windows(path, config=audio_config)[:1])))
        return torch.sigmoid(model(patches)["logits"]).mean(dim=0).numpy()


def scores(y_true: list[str], y_pred: list[str]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
            "n": len(y_true)}


# Features depend on the file only, not on the split: computed once per path and reused
# by every split of --split-seeds.
_MFCC_CACHE: dict[str, np.ndarray] = {}
_TAGS_CACHE: dict[str, np.ndarray] = {}


def _standardised_lr(train, test, *, cache: dict[str, np.ndarray],
                     compute: Callable[[str], np.ndarray]) -> dict[str, float]:
    """Standardised logistic regression on per-file features ``compute(path)`` [shape=(dim,)],
    cached in ``cache``; trained on ``train``, scored on ``test``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    for e in [*train, *test]:
        if e.path not in cache:
            cache[e.path] = compute(e.path)
    x_train = np.stack([cache[e.path] for e in train])
    x_test = np.stack([cache[e.path] for e in test])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, C=1.0))
    clf.fit(x_train, [e.genre for e in train])
    return scores([e.genre for e in test], list(clf.predict(x_test)))


def audio_baseline(train, test, audio_config) -> dict[str, float]:
    return _standardised_lr(train, test, cache=_MFCC_CACHE,
                            compute=lambda path: mfcc_stats(path, audio_config=audio_config))


@functools.cache
def _musicnn_network():
    """The pretrained musicnn, its front end and audio config: loaded once, on first use."""
    from mmgenre_core.audio import LogMel
    from mmgenre_core.config import AudioConfig
    from mmgenre_core.musicnn import load_pretrained

    config = AudioConfig(sample_rate=16000, n_fft=512, hop_length=256, n_mels=96, top_db=None, scale="musicnn")
    return load_pretrained(), LogMel(config), config


def musicnn_baseline(train, test) -> dict[str, float]:
    """Logistic regression on the MSD musicnn's 50 tag probabilities (30-s window, 10 patches)."""
    def tags(path: str) -> np.ndarray:
        model, logmel, config = _musicnn_network()
        return musicnn_tags(path, model=model, logmel=logmel, audio_config=config)

    return _standardised_lr(train, test, cache=_TAGS_CACHE, compute=tags)


def lyrics_baseline(train, test, *, cleaned: bool = False) -> dict[str, float]:
    """TF-IDF (1-2-grams) + logistic regression on the raw lyrics, or with ``cleaned`` on
    the text the model reads (``mmgenre_core.text.clean_lyrics``: Genius-style headers,
    "[Chorus]" labels and embed counters removed). The raw text lets a baseline learn the
    scraping source: one of the corpus's two sources carries those headers and is 53%
    Country, the other 16%."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from mmgenre_core.text import clean_lyrics

    def text(e) -> str:
        return "\n".join(clean_lyrics(e.lyrics)) if cleaned else e.lyrics

    clf = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
                        LogisticRegression(max_iter=5000, C=10.0))
    clf.fit([text(e) for e in train], [e.genre for e in train])
    return scores([e.genre for e in test], list(clf.predict([text(e) for e in test])))


def compare(data, models: list, *, split: str) -> dict[str, dict]:
    """Baselines and ``models`` (checkpoint paths; None = the shipped one) on one split."""
    from mmgenre_core.config import AudioConfig
    from mmgenre_core.predict import GenreClassifier

    # MFCCs of the centre 30 s at 22.05 kHz (FMA's clip), whatever the model listens to.
    audio_config = AudioConfig()
    rows: dict[str, dict] = {}
    for modality in ("audio", "lyrics"):
        has = (lambda e: e.has_audio) if modality == "audio" else (lambda e: e.has_lyrics)
        train = [e for e in data.split("train") if has(e)]
        test = [e for e in data.split(split) if has(e)]
        genres = sorted({e.genre for e in train})
        test = [e for e in test if e.genre in genres]  # a baseline cannot predict unseen genres
        if modality == "audio":
            rows["audio: MFCC stats + logistic regression"] = audio_baseline(train, test, audio_config)
            rows["audio: musicnn MSD tags + logistic regression"] = musicnn_baseline(train, test)
        else:
            rows["lyrics: TF-IDF + logistic regression"] = lyrics_baseline(train, test)
            rows["lyrics: TF-IDF + logistic regression on the cleaned text the model reads"] = lyrics_baseline(
                train, test, cleaned=True)
        for model in models:
            clf = GenreClassifier.load(model, device="cpu")
            k = len(clf.genres)
            if modality == "audio":
                preds = clf.predict([e.path for e in test], use_lyrics=False, top_k=k)
            else:
                preds = clf.predict_lyrics([e.lyrics for e in test], top_k=k)
            mc = clf.model.config
            branch = f"{mc.audio_branch} audio branch" if modality == "audio" else (
                "HAN + bag of words" if mc.lyrics_bow else "HAN")
            name = f"{modality}: mmgenre ({branch}, {modality} alone)"
            if len(models) > 1:
                name = f"{modality}: mmgenre {clf.model_id} ({branch}, {modality} alone)"
            rows[name] = scores([e.genre for e in test], [p.genres[0].genre if p.ok else "" for p in preds])
        rows[f"{modality}: chance (majority genre of train)"] = scores(
            [e.genre for e in test], [max(genres, key=[e.genre for e in train].count)] * len(test))
        print(f"{modality}: {len(train)} train / {len(test)} {split} examples, {len(genres)} genres: "
              f"{', '.join(genres)}", file=sys.stderr)
    return rows


def print_table(rows: dict[str, dict], title: str) -> None:
    print(f"\n| {title} | accuracy | macro-F1 | examples |")
    print("|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['accuracy']:.1%} | {r['macro_f1']:.3f} | {r['n']} |")


def train_for_split(config: str, seed: int, runs: Path) -> Path:
    """The config's model trained on the split of ``data.split_seed=seed`` (reused when already there)."""
    from training.config import load_config
    from training.train import train

    out = runs / Path(config).stem / f"split_seed_{seed}"
    if not (out / "model.pt").is_file():
        print(f"training {config} with data.split_seed={seed} into {out}", file=sys.stderr)
        train(load_config(config, [f"data.split_seed={seed}"]), out, progress=False)
    return out / "model.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", metavar="JSON",
                        help="training config whose split is used (the first one's) and, with --split-seeds, "
                             "whose model is trained on each split; repeat to compare several configs "
                             "(default: training/configs/default_model.json)")
    parser.add_argument("--model", action="append", metavar="CKPT",
                        help="checkpoint to compare; repeat for several (default: the model shipped in the package)")
    parser.add_argument("--split", default="test", choices=["valid", "test"])
    parser.add_argument("--split-seeds", type=int, nargs="+", metavar="SEED",
                        help="repeat on these artist-disjoint splits (data.split_seed), training each config's "
                             "model on each one (in --runs; reused when present), and summarise over them")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "baselines",
                        help="where --split-seeds trains its models")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    from training.config import load_config
    from training.datasets import build_dataset

    configs = args.config or [str(ROOT / "training" / "configs" / "default_model.json")]
    if not args.split_seeds:
        rows = compare(build_dataset(load_config(configs[0])), args.model or [None], split=args.split)
        print_table(rows, f"held-out {args.split} split (artist-disjoint)")
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
        return

    per_seed: dict[int, dict[str, dict]] = {}
    for seed in args.split_seeds:
        models = [train_for_split(c, seed, args.runs) for c in configs]
        data = build_dataset(load_config(configs[0], [f"data.split_seed={seed}"]))
        per_seed[seed] = compare(data, models, split=args.split)
        print_table(per_seed[seed], f"split seed {seed}: held-out {args.split} split")
    summary = {}
    for name in per_seed[args.split_seeds[0]]:
        runs = [per_seed[s][name] for s in args.split_seeds]
        acc = np.array([r["accuracy"] for r in runs])
        f1 = np.array([r["macro_f1"] for r in runs])
        n = np.array([r["n"] for r in runs])
        summary[name] = {"accuracy_mean": float(acc.mean()), "accuracy_sd": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
                         "macro_f1_mean": float(f1.mean()), "macro_f1_sd": float(f1.std(ddof=1)) if len(f1) > 1 else 0.0,
                         "pooled_accuracy": float((acc * n).sum() / n.sum()), "n": int(n.sum())}
    print(f"\n| {len(args.split_seeds)} artist-disjoint splits (seeds {', '.join(map(str, args.split_seeds))}), "
          f"{args.split} | accuracy, mean ± sd | macro-F1, mean ± sd | pooled accuracy | examples |")
    print("|---|---|---|---|---|")
    for name, r in summary.items():
        print(f"| {name} | {r['accuracy_mean']:.1%} ± {r['accuracy_sd']:.1%} | {r['macro_f1_mean']:.3f} ± "
              f"{r['macro_f1_sd']:.3f} | {r['pooled_accuracy']:.1%} | {r['n']} |")
    paired = paired_differences(per_seed)
    print(f"\n| model minus baseline, paired by split ({args.split}) | accuracy difference, mean ± sd | "
          f"macro-F1 difference, mean ± sd | splits where the model is better |")
    print("|---|---|---|---|")
    for name, r in paired.items():
        print(f"| {name} | {r['accuracy_diff_mean']:+.1%} ± {r['accuracy_diff_sd']:.1%} | "
              f"{r['macro_f1_diff_mean']:+.3f} ± {r['macro_f1_diff_sd']:.3f} | {r['wins']} of {r['splits']} |")
    if args.json:
        own = load_config(configs[0]).data.split_seed
        Path(args.json).write_text(json.dumps(
            {"split": args.split, "seeds": args.split_seeds, "config_split_seed": own,
             "configs": [str(Path(c).name) for c in configs], "per_seed": per_seed, "summary": summary,
             "paired": paired}, indent=2))


def paired_differences(per_seed: dict[int, dict[str, dict]]) -> dict[str, dict]:
    """Each model row minus each baseline row of its modality, split by split."""
    seeds = list(per_seed)
    names = list(per_seed[seeds[0]])
    out = {}
    for model in (n for n in names if ": mmgenre" in n):
        modality = model.split(":")[0]
        for base in (n for n in names if n.startswith(modality + ":") and "logistic regression" in n):
            da = np.array([per_seed[s][model]["accuracy"] - per_seed[s][base]["accuracy"] for s in seeds])
            df = np.array([per_seed[s][model]["macro_f1"] - per_seed[s][base]["macro_f1"] for s in seeds])
            sd = (lambda v: float(v.std(ddof=1)) if len(v) > 1 else 0.0)
            out[f"{model} vs {base.split(': ', 1)[1]}"] = {
                "accuracy_diff_mean": float(da.mean()), "accuracy_diff_sd": sd(da),
                "macro_f1_diff_mean": float(df.mean()), "macro_f1_diff_sd": sd(df),
                "wins": int((da > 0).sum()), "ties": int((da == 0).sum()), "splits": len(seeds)}
    return out


if __name__ == "__main__":
    main()
