"""Audio + lyrics on genre-matched pairs: audio alone, lyrics alone, late fusion, a fused head.

No real track of ``../shared/data`` has both audio and lyrics, so a *pair* stands in for
one: a labelled audio clip and the full text of another song of the same genre from
``lyrics_large`` (an approximation: the two halves are independent given the genre, which
real tracks' audio and lyrics are not). Genres: those with audio clips (at least 5) and
lyrics, Classical left out (instrumental: the no-lyrics path).

Audio clips and songs are split into 5 artist-grouped folds each (fold seeds 0, 1, 2); fold
k's test pairs join fold k's test clips with fold k's full-text test songs, so no artist of
either half is in training. On the training folds:

* audio: ``window_head.fit_window_head`` (L2 0.1), scored on each clip's first five windows;
* lyrics: TF-IDF (1-2 grams, sublinear tf, min_df 2) + logistic regression (balanced);
* late fusion: log p_audio + w (log p_lyrics - log prior), w from 0.25 to 1.5;
* shipped rule (training/fusion.py, what the default model does with a track that has
  both): log p_audio + w (log p_lyrics - log prior), w by the validation pairs'
  log-likelihood (continuous, 0 to 4) instead of their accuracy on a grid (dividing by the
  prior the balanced lyrics head learnt, a uniform one, instead was about 3 points worse
  on seed 0's first four folds);
* fused head: logits a log p_audio + b (log p_lyrics - log prior), (a, b) by multinomial
  log-likelihood on the validation pairs: late fusion with both weights learnt. (A free
  logistic regression over the 18 log-probabilities overfit the ~60 validation pairs of a
  fold, 52.7% in a first run; per-genre biases beside a and b, 66.7%: a genre missing from
  one fold's validation pairs got a bias that kept it from ever being answered);
  w and the fused head are fitted on validation pairs (one inner artist fold of each half
  held out of the heads), then applied with the heads fitted on all training folds.

    python benchmarks/window_features.py --out F.npz
    python benchmarks/cv_fusion.py --features F.npz [--seeds 0 1 2] [--json J]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.cv_lyrics import summarise  # noqa: E402
from benchmarks.cv_pool import DATA  # noqa: E402
from training.fusion import fit_lyrics_weight, fused_logits  # noqa: E402

WEIGHTS = (0.25, 0.5, 0.75, 1.0, 1.5)
SCORED_WINDOWS = 5


def load_songs(path: Path, genres: list[str]) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """lyrics_large's songs of ``genres``: texts, genre indices, artist groups, full-text mask."""
    texts, labels, artists, full = [], [], [], []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            song = json.loads(line)
            if song.get("genre") in genres and (song.get("lyrics") or "").strip():
                texts.append(song["lyrics"])
                labels.append(genres.index(song["genre"]))
                artists.append(song["artist"].split(",")[0].strip().casefold())
                full.append(song.get("text_form") is None)
    return texts, np.array(labels), np.array(artists), np.array(full)


class Heads:
    """The two single-modality heads, fitted on the given training clips and songs."""

    def __init__(self, nested, order, ends, audio_y, audio_groups, texts, lyrics_y, n_classes, seed):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        from training.window_head import fit_window_head

        self.order = order
        self.audio, _ = fit_window_head(nested, audio_y, audio_groups, order=order, counts=ends,
                                        n_classes=n_classes, l2_grid=(0.1,), seed=seed)
        self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=200_000)
        x = self.vectorizer.fit_transform(texts)
        self.lyrics = LogisticRegression(C=10.0, max_iter=2000, class_weight="balanced").fit(x, lyrics_y)
        self.prior = np.bincount(lyrics_y, minlength=n_classes) / len(lyrics_y)

    def log_probs(self, nested, texts) -> tuple[np.ndarray, np.ndarray]:
        from mmgenre_core.listening import window_count_rows

        means = window_count_rows(nested, self.order, [SCORED_WINDOWS])[:, 0]
        pa = self.audio.probabilities(means)
        pl = self.lyrics.predict_proba(self.vectorizer.transform(texts))
        return np.log(np.clip(pa, 1e-12, 1)), np.log(np.clip(pl, 1e-12, 1))


class FusedHead:
    """logits = a * log p_audio + b * (log p_lyrics - log prior), (a, b) fitted on pairs."""

    def __init__(self, la: np.ndarray, ll: np.ndarray, y: np.ndarray) -> None:
        from scipy.optimize import minimize
        from scipy.special import logsumexp

        n = len(y)

        def loss(theta: np.ndarray) -> float:
            z = theta[0] * la + theta[1] * ll
            return float(-(z[np.arange(n), y] - logsumexp(z, axis=1)).mean())

        self.theta = minimize(loss, np.array([1.0, 0.5]), method="L-BFGS-B", bounds=[(0, 10), (0, 10)]).x

    def predict(self, la: np.ndarray, ll: np.ndarray) -> np.ndarray:
        return (self.theta[0] * la + self.theta[1] * ll).argmax(1)


def make_pairs(audio_idx, audio_y, song_idx, song_y, rng) -> tuple[np.ndarray, np.ndarray]:
    """Each clip with a random song of its genre (clips of a genre without songs are dropped)."""
    clips, songs = [], []
    for i in audio_idx:
        pool = song_idx[song_y[song_idx] == audio_y[i]]
        if len(pool):
            clips.append(i)
            songs.append(rng.choice(pool))
    return np.array(clips), np.array(songs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--features", type=Path, required=True, help="benchmarks/window_features.py's output")
    p.add_argument("--lyrics", type=Path, default=DATA / "lyrics_large" / "lyrics.jsonl")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    from sklearn.model_selection import StratifiedGroupKFold

    data = np.load(args.features)
    nested, genres_all, artists_all = data["rounds"], np.array(data["genres"]), np.array(data["artists"])
    order, ends = [int(v) for v in data["order"]], [int(v) for v in data["ends"]]
    with open(args.lyrics, encoding="utf-8") as fh:
        lyric_genres = {json.loads(line).get("genre") for line in fh}
    genres = sorted(g for g, n in Counter(genres_all).items() if n >= 5 and g in lyric_genres and g != "Classical")
    keep = np.isin(genres_all, genres)
    nested, audio_groups = nested[keep], artists_all[keep]
    audio_y = np.array([genres.index(g) for g in genres_all[keep]])
    texts, song_y, song_groups, full = load_songs(args.lyrics, genres)
    print(f"genres: {', '.join(genres)}; {len(audio_y)} clips, {len(texts)} songs ({full.sum()} full text)", flush=True)

    rows, started = [], time.perf_counter()
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        audio_folds = list(StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(audio_y, audio_y, audio_groups))
        song_folds = list(StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(song_y, song_y, song_groups))
        for k in range(5):
            a_train, a_test = audio_folds[k]
            s_train, s_test = song_folds[k]
            # Validation pairs: one inner artist fold of each half held out of the heads.
            a_in = next(StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(
                a_train, audio_y[a_train], audio_groups[a_train]))
            s_in = next(StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(
                s_train, song_y[s_train], song_groups[s_train]))
            inner = Heads(nested[a_train[a_in[0]]], order, ends, audio_y[a_train[a_in[0]]],
                          list(audio_groups[a_train[a_in[0]]]), [texts[i] for i in s_train[s_in[0]]],
                          song_y[s_train[s_in[0]]], len(genres), seed)
            s_val = s_train[s_in[1]]
            v_clips, v_songs = make_pairs(a_train[a_in[1]], audio_y, s_val[full[s_val]], song_y, rng)
            va, vl = inner.log_probs(nested[v_clips], [texts[i] for i in v_songs])
            vy = audio_y[v_clips]
            log_prior = np.log(inner.prior)
            w = max(WEIGHTS, key=lambda w: ((va + w * (vl - log_prior)).argmax(1) == vy).mean())
            fused = FusedHead(va, vl - log_prior, vy)
            rule_w = fit_lyrics_weight(va, vl - log_prior, vy)
            # Test pairs, heads fitted on all training folds.
            heads = Heads(nested[a_train], order, ends, audio_y[a_train], list(audio_groups[a_train]),
                          [texts[i] for i in s_train], song_y[s_train], len(genres), seed)
            t_clips, t_songs = make_pairs(a_test, audio_y, s_test[full[s_test]], song_y, rng)
            ta, tl = heads.log_probs(nested[t_clips], [texts[i] for i in t_songs])
            y = audio_y[t_clips]
            said = {"audio": ta.argmax(1), "lyrics": tl.argmax(1),
                    "late fusion": (ta + w * (tl - np.log(heads.prior))).argmax(1),
                    "fused head": fused.predict(ta, tl - np.log(heads.prior)),
                    "shipped rule": fused_logits(ta, tl - np.log(heads.prior), rule_w).argmax(1)}
            row = {"seed": seed, "fold": k, "pairs": len(y), "w": w, "fused": fused.theta[:2].tolist(),
                   "rule_w": rule_w,
                   **{m: float((s == y).mean()) for m, s in said.items()}}
            rows.append(row)
            print(f"seed {seed} fold {k}: {len(y)} pairs, w {w:g}, fused a, b {fused.theta[0]:.2f}, "
                  f"{fused.theta[1]:.2f}: " + "  ".join(
                f"{m} {row[m] * 100:.1f}%" for m in said), flush=True)
    methods = ("audio", "lyrics", "late fusion", "fused head", "shipped rule")
    summary = {m: summarise([r[m] for r in rows]) for m in methods}
    better = [max(r["audio"], r["lyrics"]) for r in rows]
    summary["shipped rule minus better branch"] = summarise([r["shipped rule"] - b for r, b in zip(rows, better)])
    summary["shipped rule minus late fusion"] = summarise([r["shipped rule"] - r["late fusion"] for r in rows])
    summary["shipped rule not below late fusion (folds)"] = {
        "mean": float(np.mean([r["shipped rule"] >= r["late fusion"] for r in rows])), "sd": 0.0}
    summary["fused minus better branch"] = summarise([r["fused head"] - b for r, b in zip(rows, better)])
    summary["fused minus late fusion"] = summarise([r["fused head"] - r["late fusion"] for r in rows])
    summary["late fusion minus better branch"] = summarise([r["late fusion"] - b for r, b in zip(rows, better)])
    print(f"\n{len(rows)} folds, {time.perf_counter() - started:.0f} s (mean ± sd over folds):")
    for m, s in summary.items():
        print(f"  {m:32s} {s['mean'] * 100:+.1f} ± {s['sd'] * 100:.1f}" if "minus" in m
              else f"  {m:32s} {s['mean'] * 100:.1f}% ± {s['sd'] * 100:.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"genres": genres, "seeds": args.seeds, "rows": rows, "summary": summary},
                                        indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
