"""The fused CNN-HAN model: shapes, masking, batched == one by one, modality absence."""

from __future__ import annotations

import pytest
import torch

from mmgenre_core.config import AudioConfig, ModelConfig
from mmgenre_core.model import HAN, Attention, FusedBatch, GenreModel, SpectrogramCNN, masked_softmax

from .conftest import DEVICES

SMALL = ModelConfig(n_genres=4, n_mels=32, cnn_channels=(8, 16), audio_dim=24, vocab_size=50,
                    embed_dim=12, word_hidden=6, line_hidden=5, attention_dim=7)
SMALL_AUDIO = AudioConfig(n_mels=32, n_fft=512, hop_length=256, window_seconds=3.0)


def random_lyrics(batch: int, lines: int = 6, words: int = 5, *, seed: int = 0):
    """ids/mask (batch, lines, words) with ragged lines and documents, the last one empty."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, SMALL.vocab_size, (batch, lines, words), generator=g)
    word_counts = torch.randint(1, words + 1, (batch, lines), generator=g)
    line_counts = torch.randint(1, lines + 1, (batch,), generator=g)
    line_counts[-1] = 0
    mask = torch.arange(words) < word_counts.unsqueeze(-1)
    mask &= (torch.arange(lines) < line_counts.unsqueeze(-1)).unsqueeze(-1)
    return ids * mask, mask


def make_model(device: str = "cpu", seed: int = 0) -> GenreModel:
    torch.manual_seed(seed)
    return GenreModel(SMALL, SMALL_AUDIO).to(device).eval()


def test_masked_softmax_ignores_padding_and_guards_empty_rows():
    scores = torch.tensor([[1.0, 2.0, 50.0], [3.0, -1.0, 0.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False], [False, False, False]])
    w = masked_softmax(scores, mask)
    assert torch.allclose(w[0].sum(), torch.tensor(1.0)) and w[0, 2] == 0
    assert torch.equal(w[1], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.equal(w[2], torch.zeros(3))  # no NaN for a row without valid positions
    assert torch.isfinite(w).all()


def test_attention_rows_sum_to_one_and_skip_padding():
    att = Attention(8, 5)
    h = torch.randn(3, 6, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    vec, w = att(h, mask)
    assert vec.shape == (3, 8) and w.shape == (3, 6)
    assert torch.allclose(w.sum(-1), torch.ones(3), atol=1e-6)
    assert (w[~mask] == 0).all()
    # Changing padded positions changes nothing.
    h2 = h.clone()
    h2[~mask] = 1e3
    vec2, w2 = att(h2, mask)
    assert torch.allclose(vec, vec2, atol=1e-6) and torch.allclose(w, w2)


def test_spectrogram_cnn_output_shape_any_length():
    cnn = SpectrogramCNN(ModelConfig()).eval()  # the paper's sizes
    for frames in (40, 1292):
        assert cnn(torch.randn(2, 128, frames)).shape == (2, 500)


@pytest.mark.parametrize("device", DEVICES)
def test_han_attention_masks_and_padding_invariance(device):
    torch.manual_seed(0)
    han = HAN(SMALL).to(device).eval()
    ids, mask = random_lyrics(4)
    ids, mask = ids.to(device), mask.to(device)
    out = han(ids, mask)
    assert out.vector.shape == (4, 2 * SMALL.line_hidden)
    assert out.word_attention.shape == ids.shape and out.line_attention.shape == ids.shape[:2]
    line_mask = mask.any(-1)
    # Word attention rows of real lines sum to 1, padding words get 0.
    sums = out.word_attention.sum(-1)
    assert torch.allclose(sums[line_mask], torch.ones_like(sums[line_mask]), atol=1e-5)
    assert (out.word_attention[~mask] == 0).all()
    # Line attention over real lines sums to 1 for documents with lyrics; 0 for the empty one.
    assert torch.allclose(out.line_attention[:3].sum(-1), torch.ones(3, device=device), atol=1e-5)
    assert (out.line_attention[~line_mask] == 0).all() and (out.vector[3] == 0).all()
    # Garbage in padded positions must not change anything: padding never enters the GRUs.
    noisy = ids.clone()
    noisy[~mask] = 7
    out2 = han(noisy, mask)
    assert torch.allclose(out.vector, out2.vector, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_batched_equals_one_by_one(device):
    model = make_model(device)
    ids, mask = random_lyrics(5)
    wave = torch.randn(5, SMALL_AUDIO.window_samples) * 0.1
    has_lyrics = mask.flatten(1).any(1)

    def rows(sl: slice) -> FusedBatch:
        batch = FusedBatch.full(mel=model.frontend(wave[sl].to(device)), ids=ids[sl].to(device),
                                lyrics_mask=mask[sl].to(device))
        batch.lyrics_present = has_lyrics[sl].to(device)
        return batch

    with torch.inference_mode():
        batched = model(rows(slice(0, 5)))
        single = torch.cat([model(rows(slice(i, i + 1))) for i in range(5)])
    assert batched.shape == (5, SMALL.n_genres)
    assert torch.allclose(batched, single, atol=1e-4, rtol=1e-4)


def test_no_lyrics_uses_learned_vector_and_matters():
    model = make_model()
    with torch.no_grad():
        model.no_lyrics.copy_(torch.randn_like(model.no_lyrics))
    wave = torch.randn(3, SMALL_AUDIO.window_samples) * 0.1
    ids, mask = random_lyrics(3)
    with torch.inference_mode():
        mel = model.frontend(wave)
        absent = model(FusedBatch.full(mel=mel))
        marked_absent = FusedBatch.full(mel=mel, ids=ids, lyrics_mask=mask)
        marked_absent.lyrics_present = torch.zeros(3, dtype=torch.bool)
        explicit_absent = model(marked_absent)
        with_lyrics = model(FusedBatch.full(mel=mel, ids=ids, lyrics_mask=mask))
    # Lyrics marked absent are ignored exactly like no lyrics at all.
    assert torch.allclose(absent, explicit_absent, atol=1e-6)
    # The third document is empty: it falls back to the no-lyrics vector too.
    assert torch.allclose(with_lyrics[2], absent[2], atol=1e-6)
    assert not torch.allclose(with_lyrics[:2], absent[:2], atol=1e-4)


def test_lyrics_only_and_audio_only_models():
    torch.manual_seed(0)
    lyr_only = GenreModel(ModelConfig(**{**SMALL.to_dict(), "cnn_channels": (8, 16), "use_audio": False,
                                         "cnn_pool": (2, 4)}), SMALL_AUDIO).eval()
    ids, mask = random_lyrics(2)
    assert lyr_only(FusedBatch.full(ids=ids, lyrics_mask=mask)).shape == (2, 4)
    audio_only = GenreModel(ModelConfig(**{**SMALL.to_dict(), "cnn_channels": (8, 16), "use_lyrics": False,
                                           "cnn_pool": (2, 4)}), SMALL_AUDIO).eval()
    mel = audio_only.frontend(torch.randn(2, SMALL_AUDIO.window_samples))
    assert audio_only(FusedBatch.full(mel=mel)).shape == (2, 4)
    assert not hasattr(audio_only, "han") and not hasattr(lyr_only, "cnn")


def test_return_attention():
    model = make_model()
    ids, mask = random_lyrics(2)
    out = model(FusedBatch.full(ids=ids, lyrics_mask=mask), return_attention=True)
    assert out.logits.shape == (2, 4)
    assert out.word_attention.shape == ids.shape and out.line_attention.shape == (2, ids.shape[1])


def test_gradients_reach_both_branches_and_absent_vectors():
    model = make_model().train()
    ids, mask = random_lyrics(4)
    wave = torch.randn(4, SMALL_AUDIO.window_samples) * 0.1
    has_audio = torch.tensor([True, True, False, False])
    has_lyrics = torch.tensor([True, False, True, False])
    mel = model.frontend(wave)
    logits = model(FusedBatch(4, has_audio.nonzero().flatten(), mel=mel[has_audio],
                              lyrics_pos=has_lyrics.nonzero().flatten(), ids=ids[has_lyrics],
                              lyrics_mask=mask[has_lyrics]))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    for name in ("cnn.dense.weight", "han.embedding.weight", "han.word_gru.weight_ih_l0", "no_audio", "no_lyrics",
                 "classifier.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert model.han.embedding.weight.grad[0].abs().sum() == 0  # padding row never learns


def test_load_embeddings_keeps_padding_zero():
    han = HAN(SMALL)
    vecs = torch.randn(SMALL.vocab_size, SMALL.embed_dim)
    han.load_embeddings(vecs)
    assert torch.equal(han.embedding.weight[1:], vecs[1:]) and (han.embedding.weight[0] == 0).all()
    with pytest.raises(ValueError):
        han.load_embeddings(torch.randn(3, 3))


def test_paper_sized_model_parameter_count():
    model = GenreModel(ModelConfig())
    n = sum(p.numel() for p in model.parameters())
    # 20k x 300 embedding dominates; the CNN and GRUs are small. A sanity bound, not a target.
    assert 6_000_000 < n < 12_000_000


# --------------------------------------------------------------------------- #
# The musicnn audio branch and the bag-of-words lyrics features

MUSICNN_AUDIO = AudioConfig(sample_rate=16000, n_fft=512, hop_length=256, n_mels=96, top_db=None,
                            scale="musicnn", window_seconds=3.0, num_windows=2)
MUSICNN = ModelConfig(**{**SMALL.to_dict(), "n_mels": 96, "audio_branch": "musicnn", "lyrics_bow": True})


def musicnn_model(**changes) -> GenreModel:
    torch.manual_seed(0)
    model = GenreModel(ModelConfig(**{**MUSICNN.to_dict(), **changes}), MUSICNN_AUDIO)
    model.cnn.load_pretrained()
    return model


@pytest.mark.parametrize("feature, dim", [("pool", 1506), ("penultimate", 200), ("logits", 50)])
def test_musicnn_branch_feature_is_the_mean_over_patches(feature, dim):
    model = musicnn_model(musicnn_features=feature).eval()
    assert model.config.audio_vector_dim == dim and model.no_audio.shape == (dim,)
    mel = torch.rand(2, 96, 3 * 187 + 20) * 3  # 3 patches and a remainder
    with torch.inference_mode():
        vec = model.encode_audio(mel)
        out = model.cnn.backbone(mel[..., :3 * 187].transpose(1, 2).reshape(6, 187, 96))
        per_patch = model.cnn.backbone.pool_bn(out["pool"]) if feature == "pool" else out[feature]
    assert vec.shape == (2, dim)
    assert torch.allclose(vec, per_patch.view(2, 3, dim).mean(dim=1), atol=1e-5)


def test_frozen_musicnn_gets_no_gradient_and_keeps_its_statistics():
    model = musicnn_model().train()
    before = {k: v.clone() for k, v in model.cnn.backbone.state_dict().items()}
    assert not any(p.requires_grad for p in model.cnn.backbone.parameters())
    assert not model.cnn.backbone.training and not model.cnn.backbone.input_bn.training
    ids, mask = random_lyrics(2)
    loss = model(FusedBatch.full(mel=torch.rand(2, 96, 187) * 3, ids=ids, lyrics_mask=mask)).sum()
    loss.backward()
    assert model.classifier.weight.grad is not None and model.han.line_attention.proj.weight.grad is not None
    after = model.cnn.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # batch-norm buffers untouched


def test_finetuned_musicnn_learns_but_keeps_batchnorm_statistics():
    model = musicnn_model(musicnn_finetune=True).train()
    assert all(p.requires_grad for p in model.cnn.backbone.parameters())
    assert model.cnn.backbone.dropout.training and not model.cnn.backbone.pool_bn.training
    running = model.cnn.backbone.pool_bn.running_mean.clone()
    model(FusedBatch.full(mel=torch.rand(2, 96, 187) * 3)).sum().backward()
    assert model.cnn.backbone.timbral[0].conv.weight.grad.abs().sum() > 0
    assert torch.equal(model.cnn.backbone.pool_bn.running_mean, running)


def test_musicnn_branch_needs_its_own_spectrogram():
    with pytest.raises(ValueError, match="scale='musicnn'"):
        GenreModel(MUSICNN, AudioConfig(n_mels=96))
    with pytest.raises(ValueError, match="scale='musicnn'"):
        GenreModel(ModelConfig(**{**SMALL.to_dict(), "n_mels": 96}), MUSICNN_AUDIO)


def test_bag_of_words_is_tfidf_of_the_lyrics():
    model = musicnn_model().eval()
    model.bow.set_idf(torch.tensor([0, 0] + [1.0] * 48), 4)  # every word in 1 of 4 documents
    ids = torch.tensor([[[5, 5, 7, 1], [9, 0, 0, 0]]])  # 5 twice, 7 and 9 once, one unknown word
    bag = model.bow(ids, ids != 0)
    idf = 1 + torch.log(torch.tensor(5.0 / 2.0))
    expected = torch.zeros(50)
    expected[5], expected[7], expected[9] = torch.log1p(torch.tensor(2.0)) * idf, torch.log1p(torch.tensor(1.0)) * idf, torch.log1p(torch.tensor(1.0)) * idf
    assert torch.allclose(bag[0], expected / expected.norm(), atol=1e-6)
    # The lyrics vector is the HAN vector followed by the bag; absent lyrics: an empty bag.
    with torch.inference_mode():
        vec = model.encode_lyrics(ids, ids != 0, torch.tensor([True])).vector
        absent = model.absent_lyrics(1)
    assert vec.shape == absent.shape == (1, MUSICNN.lyrics_dim) == (1, 2 * SMALL.line_hidden + SMALL.vocab_size)
    assert torch.allclose(vec[0, 2 * SMALL.line_hidden:], bag[0])
    assert torch.count_nonzero(absent[0, 2 * SMALL.line_hidden:]) == 0


def test_only_a_pretrained_backbone_keeps_its_batchnorm_statistics():
    # The paper's CNN re-estimates every batch norm; musicnn's own ones stay as shipped,
    # while the rest of the model (none here besides musicnn's) would be re-estimated.
    paper = make_model()
    all_bns = [m for m in paper.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert paper.trainable_batchnorms() == all_bns and all_bns
    musicnn = GenreModel(MUSICNN, MUSICNN_AUDIO)
    backbone = set(musicnn.cnn.backbone.modules())
    assert any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in backbone)
    assert not set(musicnn.trainable_batchnorms()) & backbone


def test_bag_of_words_and_pairs_is_sklearns_tfidf_on_real_lyrics(data_dir):
    """BagOfWords with word pairs: sklearn's counts and idf over the same words and in-line
    pairs (build.choose_bigrams picks the pairs, fit_bag_statistics the idf), log(1 + count)."""
    import numpy as np
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

    from mmgenre_core.model import BagOfWords
    from mmgenre_core.text import PAD_ID
    from training.build import choose_bigrams, fit_bag_statistics

    docs, vocab, ids, mask = real_lyrics_grid(data_dir)
    keys = choose_bigrams(ids, vocab_size=len(vocab), max_count=150)
    assert 0 < len(keys) <= 150 and bool((keys[1:] > keys[:-1]).all())
    bow = BagOfWords(len(vocab), len(keys))
    fit_bag_statistics(bow, ids, keys)
    with torch.inference_mode():
        ours = bow(ids, mask).numpy()

    tokens = vocab.to_list()
    pair_names = [f"{tokens[int(k) // len(vocab)]} {tokens[int(k) % len(vocab)]}" for k in keys]
    columns = {w: i for i, w in enumerate(tokens)} | {p: len(vocab) + i for i, p in enumerate(pair_names)}

    def analyse(doc):
        known = [[w if w in vocab else None for w in line] for line in doc]
        words = [w for line in known for w in line if w is not None]
        pairs = [f"{a} {b}" for line in known for a, b in zip(line, line[1:]) if a is not None and b is not None]
        return words + [p for p in pairs if p in columns]

    sk = TfidfVectorizer(analyzer=analyse, vocabulary=columns).fit(docs)
    counts = CountVectorizer(analyzer=analyse, vocabulary=columns).transform(docs).toarray()
    with torch.inference_mode():
        assert np.array_equal(bow.counts(ids, mask).numpy()[:, 2:], counts[:, 2:])
    assert np.allclose(bow.idf.numpy()[2:], sk.idf_[2:], atol=1e-5)
    assert (counts[:, len(vocab):] > 0).any()  # the pairs count
    expected = np.log1p(counts) * sk.idf_
    expected[:, :2] = 0
    expected /= np.maximum(np.linalg.norm(expected, axis=1, keepdims=True), 1e-12)
    assert np.abs(ours - expected).max() < 1e-5
    # A padded copy gives the same bag: padding never makes a pair.
    padded = torch.nn.functional.pad(ids, (0, 3))
    with torch.inference_mode():
        assert torch.allclose(bow(padded, padded != PAD_ID), torch.from_numpy(ours), atol=1e-6)


def test_bag_character_ngrams_are_sklearns_char_wb_on_real_lyrics(data_dir):
    """BagOfWords with n-gram columns: sklearn's char_wb 2-5-gram counts and idf over the
    vocabulary words each song's grid holds (build.choose_char_ngrams picks the n-grams),
    the words/pairs and the n-grams L2-normalised apart, each scaled 1/sqrt(2)."""
    import numpy as np
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

    from mmgenre_core.model import BagOfWords
    from training.build import choose_bigrams, choose_char_ngrams, fit_bag_statistics, word_char_ngrams

    assert word_char_ngrams("ab") == [" a", "ab", "b ", " ab", "ab ", " ab "]
    assert word_char_ngrams("i") == [" i", "i ", " i "]
    docs, vocab, ids, mask = real_lyrics_grid(data_dir)
    keys = choose_bigrams(ids, vocab_size=len(vocab), max_count=50)
    *char_map, grams = choose_char_ngrams(ids, vocab, max_count=400)
    assert len(grams) == 400 and grams == sorted(grams)
    bow = BagOfWords(len(vocab), len(keys), char_ngrams=len(grams), char_entries=len(char_map[0]))
    fit_bag_statistics(bow, ids, keys, char_map=char_map)
    with torch.inference_mode():
        counts = bow.counts(ids, mask).numpy()
        ours = bow(ids, mask).numpy()
    width = len(vocab) + len(keys)

    known = [" ".join(w for line in doc for w in line if w in vocab) for doc in docs]
    columns = {g: i for i, g in enumerate(grams)}
    sk_counts = CountVectorizer(analyzer="char_wb", ngram_range=(2, 5), vocabulary=columns).transform(known)
    sk_idf = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), vocabulary=columns).fit(known).idf_
    assert np.array_equal(counts[:, width:], sk_counts.toarray())
    assert np.allclose(bow.idf.numpy()[width:], sk_idf, atol=1e-5)
    # The chosen n-grams are the ones in the most documents: none left out is in more.
    all_df = (CountVectorizer(analyzer="char_wb", ngram_range=(2, 5)).fit(known).transform(known) > 0).sum(0)
    assert np.sort(np.asarray(all_df).ravel())[::-1][399] <= (sk_counts > 0).sum(0).min()

    chars = np.log1p(sk_counts.toarray()) * sk_idf
    chars /= np.maximum(np.linalg.norm(chars, axis=1, keepdims=True), 1e-12)
    assert np.abs(ours[:, width:] - chars / np.sqrt(2)).max() < 1e-5
    words = counts[:, :width].any(axis=1)  # songs with a known word (some have none)
    assert words.sum() > 100
    assert np.allclose(np.linalg.norm(ours[words, :width], axis=1), 1 / np.sqrt(2), atol=1e-5)
    assert not ours[~words].any()
    # A batch of one gives the same vector as the batch.
    with torch.inference_mode():
        assert torch.allclose(bow(ids[3:4], mask[3:4]), torch.from_numpy(ours[3:4]), atol=1e-6)
    with pytest.raises(ValueError, match="n-gram map"):
        bow.set_char_ngrams(char_map[0][:-1], char_map[1][:-1], char_map[2][:-1])
    # A new map is used at once (the sparse matrix built from the map is cached).
    bow.set_char_ngrams(char_map[0], char_map[1], 2 * char_map[2])
    with torch.inference_mode():
        assert np.array_equal(bow.counts(ids, mask).numpy()[:, width:], 2 * counts[:, width:])


def real_lyrics_grid(data_dir):
    """120 real songs as tokenised lines (20 x 8 kept), their 300-word vocabulary and the
    ids/mask [shape=(120, 20, 8)]."""
    import json

    from mmgenre_core.config import TextConfig
    from mmgenre_core.text import Vocabulary, encode_batch, encode_lyrics

    with open(data_dir / "lyrics" / "lyrics.jsonl", encoding="utf-8") as fh:
        texts = [json.loads(line)["lyrics"] for line in fh][:120]
    config = TextConfig(max_lines=20, max_words=8)
    docs = [encode_lyrics(t, vocab=Vocabulary([]), config=config).lines for t in texts]
    vocab = Vocabulary.build(docs, max_size=300)
    ids, mask, _ = encode_batch(texts, vocab=vocab, config=config)
    return docs, vocab, ids, mask
