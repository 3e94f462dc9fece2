"""mmgenre_core.learn: folds by artist, scoring against genre sets, transfer from the base head."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmgenre_core.checkpoint import load_checkpoint
from mmgenre_core.head import Block, fit_head
from mmgenre_core.learn import LabelledTrack, LearnError, _artist_folds, base_prior, learn_genre_head, score
from mmgenre_core.predict import default_model_path


def test_folds_keep_every_artist_on_one_side_and_are_balanced():
    artists = [f"a{i % 17}" for i in range(300)]
    folds = _artist_folds(artists, folds=3, seed=0)
    for a in set(artists):
        assert len({int(f) for f, b in zip(folds, artists) if b == a}) == 1
    sizes = np.bincount(folds)
    assert len(sizes) == 3 and sizes.max() - sizes.min() <= 18
    assert _artist_folds(["one"] * 5, folds=3, seed=0).tolist() == [0] * 5  # one artist: no validation
    assert np.array_equal(folds, _artist_folds(artists, folds=3, seed=0))


def test_score_counts_any_of_a_tracks_genres():
    acc, f1 = score(["rock", "Metal", "jazz", None], [["rock"], ["rock", "metal"], ["blues"], ["jazz"]])
    assert acc == pytest.approx(0.5)
    # rock 1/1, metal 1/1 (tp), blues 0 (fn), jazz: one fp + one fn -> 0
    assert f1 == pytest.approx((1 + 1 + 0 + 0) / 4)


def test_a_strong_prior_keeps_the_base_weights():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(200, 6)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 3, 200))
    prior = torch.from_numpy(rng.normal(size=(3, 6)).astype(np.float32))
    blocks = [Block("audio", 0, 6, True)]
    w_strong, _ = fit_head(x, y, torch.ones(200), blocks=blocks, l2=[1e4], n_classes=3, prior=prior)
    w_free, _ = fit_head(x, y, torch.ones(200), blocks=blocks, l2=[1e4], n_classes=3)
    assert torch.allclose(w_strong, prior, atol=1e-2)
    assert w_free.abs().max() < 1e-2


def test_base_prior_maps_the_users_words_onto_the_base_genres():
    base = load_checkpoint(default_model_path())
    model = base.build_model()
    dim = base.model_config.audio_vector_dim
    w0, b0 = base_prior(base, ["hiphop", "rock", "metal"], {"Hip-Hop": "hiphop"})
    hip, rock = base.genres.index("Hip-Hop"), base.genres.index("Rock")
    assert torch.equal(w0[0], model.classifier.weight[hip, :dim].detach())
    assert torch.equal(w0[1], model.classifier.weight[rock, :dim].detach())
    assert not w0[2].any() and b0[2] <= b0[:2].min()  # a genre the base model does not know


def test_learning_needs_two_genres_with_enough_tracks():
    base = load_checkpoint(default_model_path())
    feats = np.ones((4, base.model_config.audio_vector_dim), np.float32)
    tracks = [LabelledTrack(feats, ("rock",), f"a{i}") for i in range(6)] + \
        [LabelledTrack(feats, ("jazz",), "b")] * 2
    with pytest.raises(LearnError, match="at least two genres with 5"):
        learn_genre_head(tracks, base=base)
