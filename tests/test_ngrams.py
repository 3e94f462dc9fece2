"""The bag that reads the lyrics text: n-grams of the cleaned text (mmgenre_core/ngrams.py)
and BagOfWords' text columns, against sklearn on real lyrics."""

from __future__ import annotations

import json
import zlib
from collections import Counter

import numpy as np
import pytest
import torch

from mmgenre_core.config import ModelConfig
from mmgenre_core.errors import ConfigError
from mmgenre_core.model import BagOfWords
from mmgenre_core.ngrams import BLOCK_SPAN, CHAR_BLOCK, WORD_BLOCK, bag_text, char_ngrams, ngram_counts, word_ngrams


def real_texts(data_dir, n: int = 300) -> list[str]:
    path = data_dir / "lyrics_large" / "lyrics.jsonl"
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line)["lyrics"] for _, line in zip(range(n), fh)]


def sklearn_analysers():
    from sklearn.feature_extraction.text import TfidfVectorizer

    return (TfidfVectorizer(ngram_range=(1, 2)).build_analyzer(),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5)).build_analyzer())


@pytest.mark.parametrize("text, words, chars", [
    ("", [], []),
    ("i", [], [" i", "i ", " i "]),
    ("ab", ["ab"], [" a", "ab", "b ", " ab", "ab ", " ab "]),
    ("don't stop", ["don", "stop", "don stop"], None),  # sklearn's tokens: \w\w+, so "t" is dropped
    ("c'est la vie", ["est", "la", "vie", "est la", "la vie"], None),
])
def test_ngrams_of_small_texts(text, words, chars):
    word_an, char_an = sklearn_analysers()
    assert word_ngrams(text) == words == word_an(text)
    assert char_ngrams(text) == char_an(text)
    if chars is not None:
        assert char_ngrams(text) == chars


def test_ngrams_are_sklearns_on_real_lyrics(data_dir):
    word_an, char_an = sklearn_analysers()
    texts = [bag_text(t) for t in real_texts(data_dir)]
    assert sum(map(len, texts)) > 100_000
    for text in texts:
        assert Counter(word_ngrams(text)) == Counter(word_an(text))
        assert Counter(char_ngrams(text)) == Counter(char_an(text))


def test_ngram_counts_keys_and_counts():
    text = "[Chorus]\nLovin' you, lovin' you\nDon't stop"
    keys, counts = ngram_counts(text)
    assert keys.dtype == np.int64 and np.all(np.diff(keys) > 0)  # distinct, ascending
    blocks = keys // BLOCK_SPAN
    assert set(blocks.tolist()) == {WORD_BLOCK, CHAR_BLOCK} and np.all(np.diff(blocks) >= 0)  # words first
    lowered = bag_text(text)
    assert "chorus" not in lowered  # the section label was cleaned away
    expected = Counter({zlib.crc32(g.encode()) + WORD_BLOCK * BLOCK_SPAN: c for g, c in Counter(word_ngrams(lowered)).items()})
    expected.update({zlib.crc32(g.encode()) + CHAR_BLOCK * BLOCK_SPAN: c for g, c in Counter(char_ngrams(lowered)).items()})
    assert dict(zip(keys.tolist(), counts.tolist())) == dict(expected)
    assert expected[zlib.crc32(b"lovin") + BLOCK_SPAN] == 2 and expected[zlib.crc32(b"n' ") + 2 * BLOCK_SPAN] == 2
    # Lone surrogates (tags decoded with surrogateescape) and NULs are n-grams like any other.
    for odd in ("abc \ud800def ghi", "x\udcff\udcfe yy", "\x00\x00 zz"):
        k, c = ngram_counts(odd)
        assert len(k) and c.min() >= 1
    for empty in (None, "", "[Intro]\n\n"):
        k, c = ngram_counts(empty)
        assert k.shape == c.shape == (0,)


def fitted_bag(texts, **kwargs) -> BagOfWords:
    from training.build import fit_text_bag

    return fit_text_bag(texts, vocab_size=2, **{"max_words": 10**6, "max_chars": 10**6, **kwargs})


def test_text_bag_is_two_sklearn_tfidfs_on_real_lyrics(data_dir):
    """Columns = every n-gram in >= 2 songs; each song's row = sklearn's word 1-2-gram and
    char_wb 2-5-gram TF-IDF (sublinear tf, smoothed idf, L2 per block) side by side / sqrt(2)."""
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = real_texts(data_dir)
    bow = fitted_bag(texts)
    lowered = [bag_text(t) for t in texts]
    vw = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    vc = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)
    xw, xc = vw.fit_transform(lowered), vc.fit_transform(lowered)
    assert (bow.text_words, bow.text_chars) == (xw.shape[1], xc.shape[1])
    keys = bow.text_keys.numpy()

    def order(names, block):  # sklearn's columns in the bag's (key) order
        at = np.searchsorted(keys, [zlib.crc32(n.encode()) + block * BLOCK_SPAN for n in names])
        assert np.array_equal(np.sort(at), np.arange(len(at)) + (0 if block == WORD_BLOCK else bow.text_words))
        return np.argsort(at)

    expected = sp.hstack([xw[:, order(vw.get_feature_names_out(), WORD_BLOCK)],
                          xc[:, order(vc.get_feature_names_out(), CHAR_BLOCK)]]).toarray() / np.sqrt(2)
    ours = bow.read_texts(texts).numpy()
    assert np.abs(ours - expected).max() < 1e-5
    # The sparse rows training uses are the same numbers.
    assert np.abs(bow.text_rows([ngram_counts(t) for t in texts]).to_dense().numpy() - ours).max() < 1e-6
    # Batched == one by one, and a missing text is all zeros.
    for i in (0, 17, 299):
        assert torch.allclose(bow.read_texts([texts[i]])[0], torch.from_numpy(ours[i]), atol=1e-6)
    assert not bow.read_texts([None, ""]).any()


def test_text_bag_keeps_the_ngrams_of_the_most_songs(data_dir):
    texts = real_texts(data_dir, 120)
    full = fitted_bag(texts)
    small = fitted_bag(texts, max_words=50, max_chars=70)
    assert (small.text_words, small.text_chars) == (50, 70)
    assert set(small.text_keys.tolist()) <= set(full.text_keys.tolist())
    # The idf of a kept n-gram is the same, and no n-gram left out is in more songs.
    where = np.searchsorted(full.text_keys.numpy(), small.text_keys.numpy())
    assert torch.allclose(small.idf, full.idf[where])
    words = full.idf[:full.text_words]
    left_out = np.setdiff1d(np.arange(full.text_words), where[:50])
    assert float(words[left_out].min()) >= float(small.idf[:50].max()) - 1e-6  # higher idf = fewer songs


def test_text_bag_refuses_bad_keys_and_configs():
    bow = BagOfWords(2, text_words=2, text_chars=1)
    word, char = WORD_BLOCK * BLOCK_SPAN, CHAR_BLOCK * BLOCK_SPAN
    bow.set_text_keys(torch.tensor([word + 5, word + 9, char + 1]))
    for bad in ([word + 9, word + 5, char + 1], [word + 5, char + 1, char + 2], [word + 5, word + 9]):
        with pytest.raises(ValueError, match="distinct ascending"):
            bow.set_text_keys(torch.tensor(bad))
    with pytest.raises(ValueError, match="reads the lyrics text"):
        bow(torch.ones((1, 2, 2), dtype=torch.long), torch.ones((1, 2, 2), dtype=torch.bool))
    with pytest.raises(ValueError, match="no vocabulary columns"):
        BagOfWords(10, 5, text_words=2)
    with pytest.raises(ConfigError, match="no vocabulary columns"):
        ModelConfig(lyrics_bow=True, bag_bigrams=10, bag_text_words=5)
    mc = ModelConfig(lyrics_bow=True, vocab_size=500, bag_text_words=40, bag_text_chars=60)
    assert mc.bag_reads_text and mc.bag_dim == 100 and mc.lyrics_dim == 2 * mc.line_hidden + 100


def lyrics_model_with(bag: BagOfWords, batch_texts: list[str | None]):
    """A lyrics-only GenreModel around the fitted text ``bag`` (a random head, seed 0) and a
    batch of ``batch_texts`` for it: (model, its config, its words, the text config, inputs,
    (ids, mask, has lyrics))."""
    from mmgenre_core.config import TextConfig
    from mmgenre_core.model import FusedBatch, GenreModel
    from mmgenre_core.text import Vocabulary, encode_batch

    words = ["<pad>", "<unk>", "love", "baby", "the"]
    mc = ModelConfig(use_audio=False, lyrics_bow=True, vocab_size=len(words), n_genres=3, embed_dim=8,
                     word_hidden=4, line_hidden=4, attention_dim=8, bag_text_words=bag.text_words,
                     bag_text_chars=bag.text_chars, bag_text_shape=bag.text_shape)
    torch.manual_seed(0)
    model = GenreModel(mc).eval()
    model.bow.load_state_dict(bag.state_dict())
    with torch.no_grad():
        model.classifier.weight.normal_()
    tc = TextConfig()
    ids, mask, has = encode_batch(batch_texts, vocab=Vocabulary.from_list(words), config=tc)
    inputs = FusedBatch.full(ids=ids, lyrics_mask=mask, lyrics_texts=batch_texts)
    inputs.lyrics_present = has
    return model, mc, words, tc, inputs, (ids, mask, has)


def test_a_model_with_a_text_bag_reads_the_text_and_round_trips(tmp_path, data_dir):
    """GenreModel: the bag reads FusedBatch.lyrics_texts (not the id grid); a document
    without lyrics gets the "absent" vector; a saved checkpoint gives the same logits."""
    from mmgenre_core.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from mmgenre_core.config import AudioConfig
    from mmgenre_core.model import FusedBatch

    texts = real_texts(data_dir, 80)
    bag = fitted_bag(texts, max_words=400, max_chars=600)
    assert (bag.text_words, bag.text_chars) == (400, 600)
    batch_texts = [texts[0], None, texts[5]]
    model, mc, words, tc, inputs, (ids, mask, has) = lyrics_model_with(bag, batch_texts)
    with torch.inference_mode():
        logits = model(inputs)
        vec = model.encode_lyrics(ids, mask, has, batch_texts).vector
        with pytest.raises(ValueError, match="one text per document"):
            model(FusedBatch.full(ids=ids, lyrics_mask=mask))
    # Inference multiplies the bag as sparse rows, once per document: the same logits as the
    # head over the dense row vectors training builds.
    with torch.inference_mode():
        assert torch.allclose(logits, model.classifier(model.head_inputs(inputs)), atol=1e-5)
    assert torch.allclose(vec[0, 2 * mc.line_hidden:], bag.read_texts([texts[0]])[0])
    assert not vec[1, 2 * mc.line_hidden:].any()  # no lyrics: an empty bag
    path = save_checkpoint(tmp_path / "m.pt", Checkpoint(model_config=mc, audio_config=AudioConfig(), text_config=tc,
                                                         genres=["A", "B", "C"], vocab=words,
                                                         state_dict=model.state_dict(), metadata={}))
    loaded = load_checkpoint(path)
    assert loaded.model_config.bag_reads_text and torch.equal(loaded.state_dict["bow.text_keys"], bag.text_keys)
    again = loaded.build_model()
    with torch.inference_mode():
        assert torch.allclose(again(inputs), logits, atol=1e-6)
