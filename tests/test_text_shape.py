"""The text's shape columns of the lyrics bag (mmgenre_core/text_shape.py) and the
squared-hinge loss of the linear head (mmgenre_core/head.py), on real lyrics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mmgenre_core.config import ModelConfig
from mmgenre_core.errors import ConfigError
from mmgenre_core.head import Block, fit_head
from mmgenre_core.model import BagOfWords
from mmgenre_core.ngrams import ngram_counts
from mmgenre_core.text_shape import SHAPE_NAMES, text_shape

from .test_ngrams import fitted_bag, lyrics_model_with, real_texts


@pytest.mark.parametrize("text, expected", [
    (None, [0, 0, 0, 0, 0, 0]),
    ("", [0, 0, 0, 0, 0, 0]),
    ("[Chorus]\n\n", [0, 0, 0, 0, 0, 0]),  # labels only: no words
    # 4 words, 2 lines, 3 distinct words, 2 words a line, all ASCII, no line repeated
    ("la la land\nsing", [math.log1p(4), math.log1p(2), 3 / 4, math.log1p(2), 0, 0]),
    # a line sung twice (the case is folded first) and the section label dropped
    ("[Verse 1]\nOh my\noh my\nbye", [math.log1p(5), math.log1p(3), 3 / 5, math.log1p(5 / 3), 0, 1 / 3]),
    # 2 of the 9 characters of "café\nnaïve" (the line break counts) are not ASCII
    ("Café\nnaïve", [math.log1p(2), math.log1p(2), 1, math.log1p(1), 2 / 10, 0]),
])
def test_text_shape_of_small_texts(text, expected):
    shape = text_shape(text)
    assert shape.dtype == np.float32 and shape.shape == (len(SHAPE_NAMES),)
    assert np.allclose(shape, expected, atol=1e-6), shape


def test_text_shape_bag_on_real_lyrics(data_dir):
    """The shape columns follow the n-gram columns, standardised over the training songs
    (mean 0, standard deviation SHAPE_WEIGHT); the n-gram columns are the plain text bag's;
    a text without words is all zeros; batched == one by one."""
    from training.build import SHAPE_WEIGHT

    texts = real_texts(data_dir, 200)
    plain, shaped = fitted_bag(texts), fitted_bag(texts, shape=True)
    assert shaped.text_shape == 6 and shaped.width == plain.width + 6
    rows = shaped.read_texts(texts).numpy()
    assert np.array_equal(rows[:, :plain.width], plain.read_texts(texts).numpy())
    cols = rows[:, plain.width:]
    assert np.abs(cols.mean(axis=0)).max() < 1e-5
    spread = cols.std(axis=0)
    assert np.allclose(spread[spread > 0], SHAPE_WEIGHT, rtol=1e-3)
    # The long songs are the ones with the largest word-count column.
    lengths = np.array([text_shape(t)[0] for t in texts])
    assert np.array_equal(np.argsort(cols[:, 0], kind="stable"), np.argsort(lengths, kind="stable"))
    assert not shaped.read_texts([None, "", "[Intro]"]).any()
    for i in (0, 99, 199):
        assert torch.allclose(shaped.read_texts([texts[i]])[0], torch.from_numpy(rows[i]), atol=1e-6)
    # Training's sparse rows are the same numbers.
    grams = [ngram_counts(t) for t in texts]
    sparse = shaped.text_rows(grams, np.stack([text_shape(t) for t in texts])).to_dense().numpy()
    assert np.abs(sparse - rows).max() < 1e-6
    with pytest.raises(ValueError, match="shape numbers"):
        shaped.text_rows(grams)


def test_text_shape_bag_refuses_bad_configs():
    with pytest.raises(ValueError, match="shape columns"):
        BagOfWords(10, text_shape=6)  # an id bag
    with pytest.raises(ValueError, match="shape columns"):
        BagOfWords(2, text_words=3, text_shape=4)
    bow = BagOfWords(2, text_words=3, text_shape=6)
    with pytest.raises(ValueError, match="6 centres"):
        bow.set_text_shape(torch.zeros(5), torch.ones(5))
    with pytest.raises(ValueError, match="finite"):
        bow.set_text_shape(torch.zeros(6), torch.full((6,), float("nan")))
    with pytest.raises(ConfigError, match="bag_text_shape"):
        ModelConfig(lyrics_bow=True, bag_text_shape=6)
    mc = ModelConfig(lyrics_bow=True, bag_text_words=40, bag_text_chars=60, bag_text_shape=6)
    assert mc.bag_dim == 106


def test_a_model_with_a_shape_bag_round_trips(tmp_path, data_dir):
    """A checkpoint keeps the shape columns' centres and scales: the loaded model gives the
    same logits, and a track without lyrics gets an empty bag."""
    from mmgenre_core.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from mmgenre_core.config import AudioConfig

    texts = real_texts(data_dir, 80)
    bag = fitted_bag(texts, max_words=400, max_chars=600, shape=True)
    batch_texts = [texts[0], None, texts[7]]
    model, mc, words, tc, inputs, (ids, mask, has) = lyrics_model_with(bag, batch_texts)
    assert mc.bag_text_shape == 6 and mc.bag_dim == 1006
    with torch.inference_mode():
        logits = model(inputs)
        vec = model.encode_lyrics(ids, mask, has, batch_texts).vector
    assert vec.shape[1] == 2 * mc.line_hidden + 1006
    assert vec[0, -6:].abs().sum() > 0 and not vec[1, 2 * mc.line_hidden:].any()
    path = save_checkpoint(tmp_path / "m.pt", Checkpoint(model_config=mc, audio_config=AudioConfig(), text_config=tc,
                                                         genres=["A", "B", "C"], vocab=words,
                                                         state_dict=model.state_dict(), metadata={}))
    loaded = load_checkpoint(path)
    assert torch.equal(loaded.state_dict["bow.shape_scale"], bag.shape_scale)
    with torch.inference_mode():
        assert torch.allclose(loaded.build_model()(inputs), logits, atol=1e-6)


def test_squared_hinge_head_is_sklearns_linear_svm(data_dir):
    """fit_head(loss="squared_hinge") = one-vs-rest squared-hinge SVMs: on real lyrics it
    predicts what sklearn's LinearSVC (same penalty, C = 1 / (l2 * rows)) predicts."""
    from sklearn.svm import LinearSVC

    with open(data_dir / "lyrics_large" / "lyrics.jsonl", encoding="utf-8") as fh:
        songs = [json.loads(line) for i, line in enumerate(fh) if i % 24 == 0][:600]  # every genre
    texts, genres = [s["lyrics"] for s in songs], [s["genre"] for s in songs]
    names = sorted(set(genres))
    y = np.array([names.index(g) for g in genres])
    bag = fitted_bag(texts[:400])
    x_train, x_test = bag.text_bags(texts[:400]), bag.text_bags(texts[400:])
    l2 = 1e-3
    weight, bias = fit_head(x_train, torch.from_numpy(y[:400]), torch.ones(400), blocks=[Block("bag", 0, bag.width, True)],
                            l2=[l2], n_classes=len(names), loss="squared_hinge")
    ours = (torch.sparse.mm(x_test, weight.T) + bias).argmax(1).numpy()
    svm = LinearSVC(C=1 / (l2 * 400), intercept_scaling=10.0, max_iter=20000).fit(
        x_train.to_dense().numpy(), y[:400])
    theirs = svm.predict(x_test.to_dense().numpy())
    assert (ours == theirs).mean() >= 0.95
    # A different loss than the logistic regression's: different answers somewhere.
    lr_weight, _ = fit_head(x_train, torch.from_numpy(y[:400]), torch.ones(400), blocks=[Block("bag", 0, bag.width, True)],
                            l2=[l2], n_classes=len(names))
    assert not torch.allclose(lr_weight, weight, atol=1e-3)
    with pytest.raises(ValueError, match="loss must be one of"):
        fit_head(x_train, torch.from_numpy(y[:400]), torch.ones(400), blocks=[Block("bag", 0, bag.width, True)],
                 l2=[l2], n_classes=len(names), loss="hinge")


@pytest.mark.parametrize("loss", ["cross_entropy", "squared_hinge"])
def test_a_genre_without_lyrics_is_never_the_lyrics_answer(data_dir, loss):
    """A genre no training song has (Classical in the default model) gets zero weights and
    UNSEEN_GENRE_LOGIT, with either loss: a squared hinge alone would leave it at -1, which
    the fusion's division by the lyrics prior turns into the strongest evidence of all."""
    from training.frozen_heads import UNSEEN_GENRE_LOGIT, fit_lyrics_head

    with open(data_dir / "lyrics_large" / "lyrics.jsonl", encoding="utf-8") as fh:
        songs = [json.loads(line) for i, line in enumerate(fh) if i % 40 == 0][:300]
    names = sorted({s["genre"] for s in songs})
    n_classes = len(names) + 1  # the last genre has no lyrics
    y = np.array([names.index(s["genre"]) for s in songs])
    bag = fitted_bag([s["lyrics"] for s in songs], shape=True)
    x = bag.text_bags([s["lyrics"] for s in songs])
    head = fit_lyrics_head(x, y, np.array([s["artist"] for s in songs]), n_classes=n_classes, l2_grid=[1e-3],
                           power=0.0, folds=2, seed=0, max_iter=100, loss=loss)
    assert not head["weight"][-1].any() and float(head["bias"][-1]) == UNSEEN_GENRE_LOGIT
    assert head["oof"][:, -1].max() == UNSEEN_GENRE_LOGIT  # out of fold too
    assert head["oof_accuracy"] > 0.3
