"""Temperature scaling: the fit, the ECE, checkpoints that carry temperatures, inference with them."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mmgenre_core.calibration import (expected_calibration_error, fit_temperature, read_temperatures,
                                      reliability_bins, track_probabilities)
from mmgenre_core.checkpoint import load_checkpoint, save_checkpoint
from mmgenre_core.errors import CheckpointError
from mmgenre_core.predict import GenreClassifier

from .conftest import DEVICES
from .test_predict import GENRES, tiny_checkpoint


@pytest.fixture(scope="module")
def real_clips(data_dir):
    return [str(c) for c in sorted((data_dir / "emotify").glob("*/0[0-2]*.mp3"))[:3]]


def _sampled(true_t: float, *, n: int = 4000, genres: int = 5, seed: int = 0):
    """Logits and labels drawn from softmax(logits / true_t): calibrated at T = true_t."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=3.0, size=(n, genres))
    p = track_probabilities(logits, np.arange(n), n, temperature=true_t)
    labels = np.array([rng.choice(genres, p=row) for row in p])
    return logits, labels


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_fit_recovers_the_temperature_the_labels_were_drawn_at(true_t):
    logits, labels = _sampled(true_t)
    fitted = fit_temperature(logits, np.arange(len(labels)), labels)
    assert fitted == pytest.approx(true_t, rel=0.1)


def test_fit_lowers_the_ece_of_an_overconfident_model():
    logits, labels = _sampled(3.0)  # raw logits are 3x too sharp
    rows = np.arange(len(labels))
    before = expected_calibration_error(track_probabilities(logits, rows, len(labels)), labels)
    t = fit_temperature(logits, rows, labels)
    after = expected_calibration_error(track_probabilities(logits, rows, len(labels), temperature=t), labels)
    assert before > 0.1 and after < 0.03


def test_windows_are_averaged_per_track_as_inference_does():
    logits = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    probs = track_probabilities(logits, np.array([0, 0, 1]), 2, temperature=2.0)
    e = np.exp(np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.0]]))
    sm = e / e.sum(1, keepdims=True)
    assert np.allclose(probs, [sm[:2].mean(0), sm[2]])


def test_reliability_bins_and_ece_on_a_hand_made_case():
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.55, 0.45]])
    labels = np.array([0, 1, 0, 0])  # 50% right at 0.95, 100% right at 0.55
    bins = reliability_bins(probs, labels)
    assert [(b["count"], b["accuracy"]) for b in bins] == [(2, 1.0), (2, 0.5)]
    assert expected_calibration_error(probs, labels) == pytest.approx((2 * 0.45 + 2 * 0.45) / 4)


def _with_calibration(tmp_path: Path, temperature) -> Path:
    path = tiny_checkpoint(tmp_path)
    ckpt = load_checkpoint(path)
    ckpt.metadata["calibration"] = {"temperature": temperature}
    return save_checkpoint(tmp_path / "calibrated.pt", ckpt)


def test_a_checkpoint_without_calibration_means_temperature_one():
    assert read_temperatures(SimpleNamespace(metadata={}, path=None)) == {"audio": 1.0, "lyrics": 1.0, "both": 1.0}


@pytest.mark.parametrize("bad", [{"audio": -1.0}, {"audio": float("nan")}, {"lyrics": "2"}, {"both": True},
                                 {"audio": 1e9}, "warm"])
def test_a_broken_temperature_is_refused_at_load(tmp_path, bad):
    path = _with_calibration(tmp_path, bad)
    with pytest.raises(CheckpointError, match="calibration|temperature"):
        GenreClassifier.load(path, device="cpu")


@pytest.mark.parametrize("device", DEVICES)
def test_inference_divides_each_windows_logits_by_the_temperature(tmp_path, real_clips, device):
    plain = GenreClassifier.load(tiny_checkpoint(tmp_path), device=device)
    hot = GenreClassifier.load(_with_calibration(tmp_path, {"audio": 2.0, "lyrics": 0.5, "both": 4.0}), device=device)
    clip = real_clips[0]
    windows = [plain._decode_one(0, clip, None, "none", False).windows]
    logits, track, _, _ = plain._window_logits(plain._audio_features(windows), [None], False)
    expected = torch.softmax(logits / 2.0, dim=-1).mean(0).cpu().numpy()
    got = hot.predict([clip], top_k=4, lyrics=[None])[0]
    assert np.allclose([got.probabilities[g] for g in GENRES], expected, atol=1e-5)
    # Lyrics alone use the lyrics temperature; audio with lyrics the "both" one.
    lyr = "love the night road\nbaby money gun"
    p_plain = plain.predict_lyrics([lyr], top_k=4)[0].probabilities
    p_hot = hot.predict_lyrics([lyr], top_k=4)[0].probabilities
    raw = np.log([p_plain[g] for g in GENRES])
    assert np.allclose([p_hot[g] for g in GENRES], torch.softmax(torch.tensor(raw) / 0.5, dim=0).numpy(), atol=1e-5)
    both = hot.predict([clip], top_k=4, lyrics=[lyr])[0]
    lz, _, has, _ = plain._window_logits(plain._audio_features(windows), [lyr], False)
    assert bool(has.all())
    assert np.allclose([both.probabilities[g] for g in GENRES],
                       torch.softmax(lz / 4.0, dim=-1).mean(0).cpu().numpy(), atol=1e-5)


def test_temperature_one_is_bit_identical_to_no_calibration(tmp_path, real_clips):
    plain = GenreClassifier.load(tiny_checkpoint(tmp_path), device="cpu")
    one = GenreClassifier.load(_with_calibration(tmp_path, {"audio": 1.0, "lyrics": 1.0, "both": 1.0}), device="cpu")
    a, b = plain.predict(real_clips[:3], top_k=4), one.predict(real_clips[:3], top_k=4)
    assert [r.probabilities for r in a] == [r.probabilities for r in b]
