"""The model against classic baselines, on the same artist-disjoint held-out split.

* audio: MFCC statistics (20 MFCCs + deltas, mean and standard deviation over the
  analysed 30-s window) -> standardised -> logistic regression;
* lyrics: TF-IDF (word uni- and bigrams, sublinear tf) -> logistic regression;
* the model: audio alone (no lyrics) and lyrics alone (no audio) through
  ``GenreClassifier``, argmax over every genre the model can output.

The split is the training config's own (``training.datasets.build_dataset``), so the
baselines and the model are trained on the same examples and tested on the same
held-out artists.

Usage::

    python benchmarks/baselines.py --config training/configs/default_model.json \\
        [--model mmgenre_core/models/default.pt] [--split test] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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


def scores(y_true: list[str], y_pred: list[str]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
            "n": len(y_true)}


def audio_baseline(train, test, audio_config) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train = np.stack([mfcc_stats(e.path, audio_config=audio_config) for e in train])
    x_test = np.stack([mfcc_stats(e.path, audio_config=audio_config) for e in test])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, C=1.0))
    clf.fit(x_train, [e.genre for e in train])
    return scores([e.genre for e in test], list(clf.predict(x_test)))


def lyrics_baseline(train, test) -> dict[str, float]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    clf = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
                        LogisticRegression(max_iter=5000, C=10.0))
    clf.fit([e.lyrics for e in train], [e.genre for e in train])
    return scores([e.genre for e in test], list(clf.predict([e.lyrics for e in test])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "training" / "configs" / "default_model.json"))
    parser.add_argument("--model", help="checkpoint to compare (default: the model shipped in the package)")
    parser.add_argument("--split", default="test", choices=["valid", "test"])
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    from mmgenre_core.config import AudioConfig
    from mmgenre_core.predict import GenreClassifier
    from training.config import load_config
    from training.datasets import build_dataset

    cfg = load_config(args.config)
    data = build_dataset(cfg)
    audio_config = AudioConfig.from_dict(cfg.audio)
    rows: dict[str, dict] = {}
    for modality in ("audio", "lyrics"):
        has = (lambda e: e.has_audio) if modality == "audio" else (lambda e: e.has_lyrics)
        train = [e for e in data.split("train") if has(e)]
        test = [e for e in data.split(args.split) if has(e)]
        genres = sorted({e.genre for e in train})
        test = [e for e in test if e.genre in genres]  # a baseline cannot predict unseen genres
        if modality == "audio":
            rows["audio: MFCC stats + logistic regression"] = audio_baseline(train, test, audio_config)
        else:
            rows["lyrics: TF-IDF + logistic regression"] = lyrics_baseline(train, test)
        clf = GenreClassifier.load(args.model, device="cpu")
        k = len(clf.genres)
        if modality == "audio":
            preds = clf.predict([e.path for e in test], use_lyrics=False, top_k=k)
        else:
            preds = clf.predict_lyrics([e.lyrics for e in test], top_k=k)
        rows[f"{modality}: mmgenre ({clf.model_id}, {modality} alone)"] = scores(
            [e.genre for e in test], [p.genres[0].genre if p.ok else "" for p in preds])
        rows[f"{modality}: chance (majority genre of train)"] = scores(
            [e.genre for e in test], [max(genres, key=[e.genre for e in train].count)] * len(test))
        print(f"{modality}: {len(train)} train / {len(test)} {args.split} examples, {len(genres)} genres: "
              f"{', '.join(genres)}", file=sys.stderr)

    print(f"\n| held-out {args.split} split (artist-disjoint) | accuracy | macro-F1 | examples |")
    print("|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['accuracy']:.1%} | {r['macro_f1']:.3f} | {r['n']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
