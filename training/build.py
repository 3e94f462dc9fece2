"""What a run is built from: its data (prepared audio, vocabulary, word vectors, the
example table), the model, the optimizer and the learning-rate schedule."""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mmgenre_core.errors import ConfigError
from mmgenre_core.model import BagOfWords, GenreModel
from mmgenre_core.ngrams import word_char_ngrams
from mmgenre_core.text import PAD_ID, UNK_ID, Vocabulary

from training.config import OptimConfig, TrainConfig, model_config_for, resolve_path
from training.datasets import Dataset, build_dataset
from training.loader import Table, build_table
from training.lyrics_data import build_vocabulary, tokenize_all
from training.prepare import prepare_dataset
from training.runtime import Runtime
from training.word_vectors import embedding_matrix, load_vectors

log = logging.getLogger("training.train")


@dataclass
class TrainData:
    dataset: Dataset
    table: Table
    vocab: Vocabulary | None
    embedding: np.ndarray | None
    vector_stats: dict[str, Any]
    prepared_folder: str | None
    prepare_stats: dict[str, Any]


def load_data(cfg: TrainConfig, rt: Runtime | None = None, *, progress: bool = True) -> TrainData:
    """Dataset -> prepared log-mels -> vocabulary and vectors -> example table."""
    rt = rt or Runtime(torch.device("cpu"))
    dataset = build_dataset(cfg)
    text_config = cfg.text_config()
    prepared = None
    prepare_stats: dict[str, Any] = {}
    audio_examples = [e for e in dataset.examples if e.path]
    if audio_examples and cfg.model.get("use_audio", True):
        cache = resolve_path(cfg.prepare.cache_dir)
        kwargs = dict(name=cfg.name, workers=cfg.prepare.workers, chunk_size=cfg.prepare.chunk_size,
                      progress=progress and rt.main)
        if rt.main:
            prepared = prepare_dataset(audio_examples, cfg.prepare_audio_config(), cache, **kwargs)
        rt.barrier()
        if not rt.main:
            prepared = prepare_dataset(audio_examples, cfg.prepare_audio_config(), cache, **kwargs)
        prepare_stats = dict(prepared.stats)
    vocab = embedding = None
    vector_stats: dict[str, Any] = {}
    use_lyrics = cfg.model.get("use_lyrics", True)
    train_texts = [e.lyrics for e in dataset.examples if e.lyrics and e.split == "train"]
    if train_texts and use_lyrics:
        train_docs = tokenize_all(train_texts, text_config)
        vocab = build_vocabulary(train_docs, text_config, max_size=cfg.vectors.max_vocab,
                                 min_count=cfg.vectors.min_count)
        sentences = [line for doc in train_docs for line in doc]
        vectors = load_vectors(cfg.vectors, train_sentences=sentences, seed=cfg.seed)
        embedding, vector_stats = embedding_matrix(vocab, vectors, dim=cfg.vectors.dim, seed=cfg.seed)
        vector_stats["source"] = cfg.vectors.type if vectors is None else vectors.name
        del vectors
    table = build_table(dataset, prepared=prepared, vocab=vocab, text_config=text_config)
    for d in table.dropped:
        log.info("skipping %s: %s", d.key, d.reason)
    return TrainData(dataset, table, vocab, embedding, vector_stats,
                     str(prepared.folder) if prepared is not None else None, prepare_stats)


def build_model(cfg: TrainConfig, data: TrainData) -> GenreModel:
    table = data.table
    use_audio = bool((table.mel_row[table.indices("train")] >= 0).any())
    use_lyrics = data.vocab is not None and bool((table.lyr_row[table.indices("train")] >= 0).any())
    if not use_audio and not use_lyrics:
        raise ConfigError("no training example has usable audio or lyrics")
    embed_dim = (int(data.embedding.shape[1]) if data.embedding is not None
                 else int(cfg.model.get("embed_dim", cfg.vectors.dim)))
    vocab_size = len(data.vocab) if data.vocab else 2
    bag = None
    if use_lyrics and cfg.model.get("lyrics_bow"):
        rows = table.lyr_row[table.indices("train")]
        rows = rows[rows >= 0]
        text_words, text_chars = int(cfg.model.get("bag_text_words", 0)), int(cfg.model.get("bag_text_chars", 0))
        if text_words + text_chars:  # the bag reads the text; the id grid is not needed
            bag = fit_text_bag(table.texts_of(rows), vocab_size=vocab_size, max_words=text_words,
                               max_chars=text_chars, shape=bool(cfg.model.get("bag_text_shape", 0)))
        else:
            bag = fit_bag(torch.from_numpy(np.asarray(table.lyrics_ids[rows], dtype=np.int64)), data.vocab,
                          bigrams=int(cfg.model.get("bag_bigrams", 0)),
                          char_ngrams=int(cfg.model.get("bag_char_ngrams", 0)))
    mc = model_config_for(cfg, n_genres=len(table.genres), vocab_size=vocab_size, embed_dim=embed_dim,
                          use_audio=use_audio, use_lyrics=use_lyrics,
                          bag_bigrams=bag.bigram_keys.numel() if bag else 0,
                          bag_char_ngrams=bag.char_ngrams if bag else 0,
                          bag_char_entries=bag.char_word.numel() if bag else 0,
                          bag_text_words=bag.text_words if bag else 0, bag_text_chars=bag.text_chars if bag else 0,
                          bag_text_shape=bag.text_shape if bag else 0)
    torch.manual_seed(cfg.seed)
    model = GenreModel(mc, cfg.audio_config())
    if mc.use_audio and mc.audio_branch == "musicnn":
        model.cnn.load_pretrained()  # the MSD-trained weights shipped in mmgenre_core/models
    if mc.use_lyrics and data.embedding is not None:
        model.han.load_embeddings(torch.from_numpy(data.embedding), freeze=cfg.vectors.freeze)
    if mc.use_lyrics and model.bow is not None:
        model.bow = bag  # the same sizes: the config was made from it
    return model


def fit_bag(ids: torch.Tensor, vocab: Vocabulary, *, bigrams: int, char_ngrams: int) -> BagOfWords:
    """The bag of words a run fits on training lyrics ids [shape=(documents, lines, words)]:
    the vocabulary's words, at most ``bigrams`` word pairs (:func:`choose_bigrams`) and at
    most ``char_ngrams`` character n-grams (:func:`choose_char_ngrams`; 0: none), and the idf."""
    keys = (choose_bigrams(ids, vocab_size=len(vocab), max_count=bigrams) if bigrams > 0
            else torch.zeros(0, dtype=torch.long))
    char_map, grams = None, []
    if char_ngrams > 0:
        *char_map, grams = choose_char_ngrams(ids, vocab, max_count=char_ngrams)
    bow = BagOfWords(len(vocab), len(keys), char_ngrams=len(grams), char_entries=len(char_map[0]) if char_map else 0)
    fit_bag_statistics(bow, ids, keys, char_map=char_map)
    return bow


def fit_text_bag(texts: list[str], *, vocab_size: int, max_words: int, max_chars: int, shape: bool = False,
                 min_df: int = 2) -> BagOfWords:
    """A bag that reads the text (:mod:`mmgenre_core.ngrams`), fitted on training lyrics texts
    (``shape``: with the text shape columns, :mod:`mmgenre_core.text_shape`)."""
    from mmgenre_core.ngrams import ngram_counts
    from mmgenre_core.text_shape import text_shape

    shapes = np.array([text_shape(t) for t in texts], dtype=np.float32) if shape else None
    return fit_text_bag_from_counts([ngram_counts(t) for t in texts], vocab_size=vocab_size, max_words=max_words,
                                    max_chars=max_chars, min_df=min_df, shapes=shapes)


#: Each standardised shape column is multiplied by this, so the six numbers are small beside
#: the n-gram blocks (unit vectors of ~1,000 non-zero columns each). In sklearn runs on
#: cv_lyrics_large's folds 0 and 4, 0.3 and 1 scored within 0.1 point of 0.1 with a linear SVM
#: but fitted 6-15x slower; with logistic regression 0.3 was 0.1-0.2 points below 0.1.
SHAPE_WEIGHT = 0.1


def fit_text_bag_from_counts(grams: list[tuple[np.ndarray, np.ndarray]], *, vocab_size: int, max_words: int,
                             max_chars: int, min_df: int = 2, shapes: np.ndarray | None = None) -> BagOfWords:
    """The bag over each document's (keys, counts) (:func:`mmgenre_core.ngrams.ngram_counts`):
    of each block the ``max_words`` word and ``max_chars`` character n-grams found in the most
    documents (at least ``min_df``; ties by key; sklearn's ``max_features`` ranks by total count
    instead), and sklearn's smoothed idf over the documents. With ``shapes`` (each document's
    :func:`mmgenre_core.text_shape.text_shape` [shape=(documents, 6)]) the bag has shape
    columns, standardised over the documents with words and scaled by :data:`SHAPE_WEIGHT`."""
    from mmgenre_core.ngrams import BLOCK_SPAN, WORD_BLOCK

    keys, df = np.unique(np.concatenate([k for k, _ in grams]) if grams else np.zeros(0, np.int64),
                         return_counts=True)  # keys are distinct within a document: df
    keep = df >= min_df
    keys, df = keys[keep], df[keep]
    is_word = keys // BLOCK_SPAN == WORD_BLOCK
    chosen = []
    for block, limit in ((is_word, max_words), (~is_word, max_chars)):
        k, d = keys[block], df[block]
        top = np.argsort(-d, kind="stable")[:limit]  # most documents first, ties by key (ascending)
        chosen.append((np.sort(k[top]), d[np.sort(top)]))
    (word_keys, word_df), (char_keys, char_df) = chosen
    if not len(word_keys) + len(char_keys):
        raise ConfigError("no n-gram of the training lyrics is in at least "
                          f"{min_df} documents: the text bag would be empty")
    bow = BagOfWords(vocab_size, text_words=len(word_keys), text_chars=len(char_keys),
                     text_shape=0 if shapes is None else shapes.shape[1])
    bow.set_text_keys(torch.from_numpy(np.concatenate([word_keys, char_keys])))
    bow.set_idf(torch.from_numpy(np.concatenate([word_df, char_df])), len(grams))
    if shapes is not None:
        worded = shapes[[len(k) > 0 for k, _ in grams]].astype(np.float64)
        center, spread = worded.mean(axis=0), worded.std(axis=0)
        # A column constant over the training songs keeps scale SHAPE_WEIGHT: centred, it is 0 for them.
        scale = SHAPE_WEIGHT / np.where(spread > 1e-6, spread, 1.0)
        bow.set_text_shape(torch.from_numpy(center).float(), torch.from_numpy(scale).float())
    return bow


def fit_bag_statistics(bow: BagOfWords, ids: torch.Tensor, pair_keys: torch.Tensor, *,
                       char_map: list[torch.Tensor] | tuple[torch.Tensor, ...] | None = None) -> None:
    """Set the bag's word pairs, its n-gram map (``char_map``: word ids, columns, times, as
    :func:`choose_char_ngrams` gives them) and its idf: the document frequency of every
    column over the training lyrics ids [shape=(documents, lines, words)]."""
    bow.set_bigrams(pair_keys)
    if char_map is not None:
        bow.set_char_ngrams(*char_map)
    df = torch.zeros(bow.idf.shape[0])
    for start in range(0, ids.shape[0], 512):  # in chunks: documents x columns at once is GBs
        chunk = ids[start:start + 512]
        df += (bow.counts(chunk, chunk != PAD_ID) > 0).sum(dim=0)
    bow.set_idf(df, ids.shape[0])


def choose_bigrams(ids: torch.Tensor, *, vocab_size: int, max_count: int, min_df: int = 2) -> torch.Tensor:
    """The keys (:meth:`BagOfWords.pair_keys`) of the ``max_count`` word pairs found in the most
    training documents (at least ``min_df``; ties by key), ascending [shape=(<= max_count,)].
    ids [shape=(documents, lines, words)]."""
    keys, real = BagOfWords.pair_keys(ids, ids != PAD_ID, vocab_size)
    doc = torch.arange(ids.shape[0]).view(-1, 1, 1).expand_as(keys)
    span = vocab_size * vocab_size
    per_doc = torch.unique(doc[real] * span + keys[real])  # each pair once per document
    pairs, df = torch.unique(per_doc % span, return_counts=True)  # ascending keys
    pairs, df = pairs[df >= min_df], df[df >= min_df]
    top = torch.sort(-df, stable=True).indices[:max_count]  # most documents first, ties by key
    return torch.sort(pairs[top]).values


def choose_char_ngrams(ids: torch.Tensor, vocab: Vocabulary, *, max_count: int, min_df: int = 2
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """The n-gram map of the ``max_count`` character n-grams (:func:`word_char_ngrams` of the
    vocabulary words) found in the most training documents (at least ``min_df``; ties by
    n-gram), over ids [shape=(documents, lines, words)].

    Returns (word ids, columns, times) [shape=(entries,)] each, for
    :meth:`BagOfWords.set_char_ngrams`, and the n-grams in column order.
    """
    from scipy import sparse

    grams: dict[str, int] = {}
    rows, cols, vals = [], [], []
    for word_id in range(UNK_ID + 1, len(vocab)):
        for gram, times in Counter(word_char_ngrams(vocab.token_of(word_id))).items():
            rows.append(word_id)
            cols.append(grams.setdefault(gram, len(grams)))
            vals.append(times)
    word_map = sparse.csr_matrix((vals, (rows, cols)), shape=(len(vocab), len(grams)))
    flat = ids.flatten(1).numpy()
    doc = np.repeat(np.arange(flat.shape[0]), flat.shape[1])
    real = flat.ravel() > UNK_ID
    has_word = sparse.csr_matrix((np.ones(int(real.sum())), (doc[real], flat.ravel()[real])),
                                 shape=(flat.shape[0], len(vocab)))
    has_word.data[:] = 1.0  # duplicates were summed: each word once per document
    df = np.asarray(((has_word @ word_map) > 0).sum(axis=0)).ravel()
    names = np.array(list(grams), dtype=object)
    order = sorted((i for i in range(len(names)) if df[i] >= min_df), key=lambda i: (-df[i], names[i]))[:max_count]
    kept = sorted(order, key=lambda i: names[i])  # columns in n-gram order
    column_of = np.full(len(names), -1)
    column_of[kept] = np.arange(len(kept))
    coo = word_map.tocoo()
    keep = column_of[coo.col] >= 0
    entries = sorted(zip(column_of[coo.col[keep]], coo.row[keep], coo.data[keep]))
    column, word, times = (np.array(v) for v in zip(*entries)) if entries else (np.zeros(0),) * 3
    return (torch.as_tensor(word, dtype=torch.long), torch.as_tensor(column, dtype=torch.long),
            torch.as_tensor(times, dtype=torch.float32), [str(names[i]) for i in kept])


def param_groups(model: torch.nn.Module, lr_scale: dict[str, float]) -> list[dict[str, Any]]:
    """Trainable parameters grouped by learning-rate multiplier (``train.lr_scale``).

    A parameter takes the multiplier of the longest prefix of its name in
    ``lr_scale`` (1 without one); groups are in order of first appearance.
    """
    groups: dict[float, list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        matches = [k for k in lr_scale if name == k or name.startswith(k + ".")]
        scale = float(lr_scale[max(matches, key=len)]) if matches else 1.0
        groups.setdefault(scale, []).append(p)
    return [{"params": ps, "lr_scale": scale} for scale, ps in groups.items()]


def make_optimizer(model: torch.nn.Module, t: OptimConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (the paper's) or AdamW over :func:`param_groups`."""
    groups = param_groups(model, t.lr_scale)
    if t.optimizer == "adamw":
        # Beyond the paper: AdamW trains the small models of small collections far more
        # reliably than SGD (the default model uses it); the paper's runs keep SGD.
        return torch.optim.AdamW(groups, lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov and t.momentum > 0,
                           weight_decay=t.weight_decay)


class LRSchedule:
    """Per-epoch learning rate: warmup, then none / cosine / step / plateau; state is plain values."""

    def __init__(self, cfg: TrainConfig) -> None:
        t = cfg.train
        self.t = t
        self.factor = 1.0  # plateau
        self.best: float | None = None
        self.bad = 0

    def lr(self, epoch: int) -> float:
        """Learning rate of (0-based) ``epoch``."""
        t = self.t
        if t.warmup_epochs and epoch < t.warmup_epochs:
            return t.lr * (epoch + 1) / t.warmup_epochs
        if t.schedule == "cosine":
            span = max(1, t.epochs - t.warmup_epochs)
            progress = min(1.0, (epoch - t.warmup_epochs) / span)
            return t.min_lr + (t.lr - t.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
        if t.schedule == "step":
            return t.lr * t.gamma ** ((epoch - t.warmup_epochs) // max(1, t.step_size))
        if t.schedule == "plateau":
            return t.lr * self.factor
        return t.lr

    def observe(self, val_loss: float) -> None:
        if self.t.schedule != "plateau" or not math.isfinite(val_loss):
            return
        if self.best is None or val_loss < self.best - 1e-4:
            self.best, self.bad = val_loss, 0
        else:
            self.bad += 1
            if self.bad > self.t.plateau_patience:
                self.factor *= self.t.gamma
                self.bad = 0

    def state_dict(self) -> dict[str, Any]:
        return {"factor": self.factor, "best": self.best, "bad": self.bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.factor, self.best, self.bad = float(state["factor"]), state["best"], int(state["bad"])


def crop_frames(cfg: TrainConfig, seconds: float | None) -> int | None:
    """Frames of a ``seconds``-long crop of the prepared log-mels (None: the whole window)."""
    if seconds is None:
        return None
    a = cfg.audio_config()
    return max(1, int(round(seconds * a.sample_rate / a.hop_length)))


__all__ = ["TrainData", "load_data", "build_model", "param_groups", "make_optimizer", "LRSchedule", "crop_frames"]
