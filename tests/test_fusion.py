"""The fusion rule for a track with both audio and lyrics (training/fusion.py) and how
the model applies it (GenreModel.lyrics_scale_with_audio, metadata["fusion"])."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmgenre_core.calibration import read_fusion
from mmgenre_core.checkpoint import Checkpoint
from mmgenre_core.errors import CheckpointError
from mmgenre_core.model import FusedBatch
from training.fusion import fit_lyrics_weight, fused_logits, genre_matched_pairs

from .test_model import SMALL_AUDIO, make_model, random_lyrics


def test_pairs_share_a_genre_and_skip_genres_without_songs():
    audio = np.array([0, 0, 1, 2, 2, 3])  # genre 3 (say Classical) has no songs
    songs = np.array([2, 0, 1, 0, 2, 2, 1])
    clips, drawn = genre_matched_pairs(audio, songs, per_clip=3, seed=1)
    assert len(clips) == 5 * 3 and 5 not in clips
    assert (audio[clips] == songs[drawn]).all()
    again = genre_matched_pairs(audio, songs, per_clip=3, seed=1)
    assert (again[0] == clips).all() and (again[1] == drawn).all()
    assert not (genre_matched_pairs(audio, songs, per_clip=3, seed=2)[1] == drawn).all()


def _pairs(rng: np.random.Generator, n: int, *, lyrics_signal: float) -> tuple[np.ndarray, ...]:
    y = rng.integers(0, 4, n)
    audio = rng.normal(0, 1.0, (n, 4))
    audio[np.arange(n), y] += 1.0
    lyrics = rng.normal(0, 1.0, (n, 4))
    lyrics[np.arange(n), y] += lyrics_signal
    return audio, lyrics, y


@pytest.mark.parametrize("signal, low, high", [(1.0, 0.5, 4.0), (0.0, 0.0, 0.15)])
def test_lyrics_weight_follows_what_the_lyrics_know(signal, low, high):
    audio, lyrics, y = _pairs(np.random.default_rng(0), 4000, lyrics_signal=signal)
    w = fit_lyrics_weight(audio, lyrics, y)
    assert low <= w <= high

    def nll(weight: float) -> float:
        z = fused_logits(audio, lyrics, weight)
        z = z - z.max(1, keepdims=True)
        return float(-(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(1))).mean())

    # The fitted weight is the minimum: no better than it on either side, nor at 0.
    assert nll(w) <= min(nll(w * 0.8), nll(w * 1.25 + 0.01), nll(0.0)) + 1e-9


def test_lyrics_weight_needs_pairs():
    with pytest.raises(ValueError, match="no pairs"):
        fit_lyrics_weight(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0, dtype=int))


def test_model_applies_the_rule_to_rows_with_audio_and_lyrics_only():
    model = make_model()
    wave = torch.randn(3, SMALL_AUDIO.window_samples) * 0.1
    ids, mask = random_lyrics(3)  # the third document is empty
    offset = torch.tensor([0.5, -1.0, 0.0, 2.0])
    with torch.inference_mode():
        mel = model.frontend(wave)
        audio_only = model(FusedBatch.full(mel=mel))
        both = model(FusedBatch.full(mel=mel, ids=ids, lyrics_mask=mask))
        lyrics_only = model(FusedBatch.full(ids=ids, lyrics_mask=mask))
        model.lyrics_scale_with_audio, model.lyrics_offset_with_audio = 0.3, offset
        fused = model(FusedBatch.full(mel=mel, ids=ids, lyrics_mask=mask))
        fused_lyrics_only = model(FusedBatch.full(ids=ids, lyrics_mask=mask))
        fused_audio_only = model(FusedBatch.full(mel=mel))
    # Linear head: a with-audio row adds 0.3 x the lyrics' contribution, and the offset.
    expected = audio_only + 0.3 * (both - audio_only) + offset
    assert torch.allclose(fused[:2], expected[:2], atol=1e-5)
    # An empty document keeps the no-lyrics vector, no offset; lyrics or audio alone are untouched.
    assert torch.allclose(fused[2], audio_only[2], atol=1e-6)
    assert torch.equal(fused_lyrics_only, lyrics_only) and torch.equal(fused_audio_only, audio_only)


@pytest.mark.parametrize("fusion, expected", [
    (None, (1.0, None)),
    ({"lyrics_scale": 0.42}, (0.42, None)),
    ({"lyrics_scale": 0, "lyrics_offset": [1, -2.5, 0]}, (0.0, [1.0, -2.5, 0.0])),
    ({"lyrics_scale": float("nan")}, "lyrics_scale"),
    ({"lyrics_scale": -1.0}, "lyrics_scale"),
    ({"lyrics_scale": True}, "lyrics_scale"),
    ({"lyrics_scale": "0.5"}, "lyrics_scale"),
    ({}, "lyrics_scale"),
    ("late", "lyrics_scale"),
    ({"lyrics_scale": 0.5, "lyrics_offset": [1, 2]}, "lyrics_offset"),
    ({"lyrics_scale": 0.5, "lyrics_offset": [1, 2, float("inf")]}, "lyrics_offset"),
    ({"lyrics_scale": 0.5, "lyrics_offset": "1,2,3"}, "lyrics_offset"),
])
def test_read_fusion(fusion, expected):
    metadata = {} if fusion is None else {"fusion": fusion}
    ckpt = Checkpoint.__new__(Checkpoint)
    ckpt.metadata, ckpt.path = metadata, "m.pt"
    if isinstance(expected, str):
        with pytest.raises(CheckpointError, match=f"m.pt: metadata.fusion.{expected}"):
            read_fusion(ckpt, n_genres=3)
    else:
        assert read_fusion(ckpt, n_genres=3) == expected
