"""Listening in rounds: window order and rounds, plans, and the classifier's rounds on real files.

A small model (the paper's CNN, random weights: fast) that listens in rounds over real
full-length tracks and clips; its plan's threshold decides which tracks are unsure, so
the tests can count the windows each track was decoded at.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import mmgenre_core.predict as predict_module
from mmgenre_core.audio import listening_order, load_windows, window_offsets
from mmgenre_core.checkpoint import Checkpoint, save_checkpoint
from mmgenre_core.cli import main as cli_main
from mmgenre_core.config import AudioConfig, ModelConfig, TextConfig
from mmgenre_core.errors import ConfigError
from mmgenre_core.feature_cache import FeatureCache
from mmgenre_core.listening import ListeningPlan, heard_mean, plans_of, rounds_up_to, window_count_rows
from mmgenre_core.model import GenreModel
from mmgenre_core.predict import GenreClassifier

from .conftest import DATA_DIR, DEVICES

GENRES = ["Classical", "Electronic", "Pop", "Rock"]
ORDER = (3, 8, 1, 5, 10, 0, 2, 4, 6, 7, 9, 11)
ROUNDS = (2, 5, 12)
AUDIO = AudioConfig(n_mels=32, n_fft=512, hop_length=256, window_seconds=2.0, num_windows=12,
                    window_order=ORDER, window_rounds=ROUNDS)
CONFIG = ModelConfig(n_genres=4, n_mels=32, cnn_channels=(8, 16), audio_dim=24, use_lyrics=False)


# ----------------------------------------------------------------- the config
def test_default_order_and_rounds():
    order, ends = listening_order(AUDIO)
    assert order == list(ORDER) and ends == list(ROUNDS)
    # A model without rounds hears every window at once, in time order.
    assert listening_order(AudioConfig(num_windows=4)) == ([0, 1, 2, 3], [4])


@pytest.mark.parametrize("order, rounds, message", [
    ((0, 1, 2), (2, 3), "window_order must list each"),          # 3 of 12 windows
    (ORDER, (2, 5, 11), "ending at num_windows"),
    (ORDER, (5, 2, 12), "increasing"),
    (ORDER, (), "come together"),
    ((), ROUNDS, "come together"),
    (tuple(range(11)) + (0,), ROUNDS, "once"),
])
def test_bad_rounds_are_refused(order, rounds, message):
    with pytest.raises(ConfigError, match=message):
        AudioConfig(num_windows=12, window_order=order, window_rounds=rounds)


def test_a_model_without_rounds_hashes_as_before():
    """The new fields are left out of to_dict when unused: old checkpoints' configs and
    feature-cache ids stay as they were."""
    old = AudioConfig(num_windows=4).to_dict()
    assert "window_order" not in old and "window_rounds" not in old
    assert AudioConfig.from_dict(old) == AudioConfig(num_windows=4)
    new = AUDIO.to_dict()
    assert new["window_order"] == list(ORDER) and AudioConfig.from_dict(new) == AUDIO


def test_round_ends_of_a_plan():
    assert rounds_up_to([2, 5, 12], 12) == [2, 5, 12]
    assert rounds_up_to([2, 5, 12], 5) == [2, 5]
    assert rounds_up_to([2, 5, 12], 2) == [2]
    assert rounds_up_to([2, 5, 12], 4) == [2, 4]


def test_plans_from_a_checkpoint_and_their_fallback():
    stored = {"listening": {"plans": {"fast": {"max_windows": 2, "threshold": 0.0},
                                      "balanced": {"max_windows": 5, "threshold": 0.5},
                                      "thorough": {"max_windows": 99, "threshold": 0.7}}}}
    plans = plans_of(stored, num_windows=12)
    assert plans["balanced"] == ListeningPlan(5, 0.5)
    assert plans["thorough"] == ListeningPlan(12, 0.7)  # capped at the model's windows
    # Missing or damaged: every plan hears all the windows.
    for metadata in ({}, {"listening": {"plans": {"fast": {"threshold": "x"}}}}, {"listening": [1, 2]},
                     {"listening": {"plans": "all"}}):
        assert set(plans_of(metadata, num_windows=12).values()) == {ListeningPlan(12, 1.0)}
    with pytest.raises(ConfigError):
        ListeningPlan(5, 1.5)


def test_heard_mean_skips_windows_not_heard():
    f = np.full((12, 3), np.nan, np.float32)
    f[3], f[8], f[1] = [1, 1, 1], [3, 3, 3], [8, 8, 8]
    assert np.allclose(heard_mean(f, list(ORDER), 2), [2, 2, 2])
    assert np.allclose(heard_mean(f, list(ORDER), 5), [4, 4, 4])  # 5 and 10 not heard
    short = np.ones((1, 3), np.float32)
    assert np.allclose(heard_mean(short, list(ORDER), 12), 1)
    rows = window_count_rows(np.stack([f, f]), list(ORDER), [2, 5])
    assert rows.shape == (2, 2, 3)


# ------------------------------------------------------------ decoding slots
@pytest.mark.parametrize("name", ["full_tracks", "gtzan_mp3"])
def test_decoding_slots_equals_the_same_windows_of_a_full_decode(name):
    if name == "full_tracks":
        path = sorted((DATA_DIR / "full_tracks").glob("*.ogg"))[0]
    else:
        path = sorted((DATA_DIR / "gtzan").rglob("*.mp3"))[0]
    every = load_windows(path, config=AUDIO)
    assert every.shape[0] == 12
    some = load_windows(path, config=AUDIO, slots=[8, 3, 10])
    # Ogg Vorbis seeks sample-exactly; an MP3 decoder restarted at a seek point
    # (bit reservoir) may differ in the last float bit.
    assert np.allclose(some, every[[8, 3, 10]], rtol=0, atol=1e-6 if name == "gtzan_mp3" else 0)
    offsets = window_offsets(60.0, config=AUDIO)
    assert window_offsets(60.0, config=AUDIO, slots=[3, 8]) == [offsets[3], offsets[8]]


# --------------------------------------------------------- the classifier's rounds
def rounds_checkpoint(folder: Path, *, plans: dict, seed: int = 0, temperature: float = 1.0) -> Path:
    torch.manual_seed(seed)
    model = GenreModel(CONFIG, AUDIO)
    with torch.no_grad():
        model.classifier.weight.mul_(20)  # confident on some tracks, unsure on others
    ckpt = Checkpoint.from_model(model, text_config=TextConfig(), genres=GENRES, vocab=[],
                                 metadata={"name": "rounds", "version": "0",
                                           "listening": {"plans": plans},
                                           "calibration": {"temperature": {"audio": temperature}}})
    return save_checkpoint(folder / f"rounds{seed}.pt", ckpt)


@pytest.fixture(scope="module")
def tracks():
    full = sorted((DATA_DIR / "full_tracks").glob("*.ogg"))[:4]
    clips = sorted((DATA_DIR / "gtzan").rglob("*.mp3"))[:4]
    return [str(p) for p in full + clips]


@pytest.fixture
def decoded_windows(monkeypatch):
    """Counts the windows the classifier decodes, per file."""
    counts: dict[str, int] = {}
    real = predict_module.load_windows

    def counting(path, *, config, slots=None):
        windows = real(path, config=config, slots=slots)
        counts[str(path)] = counts.get(str(path), 0) + (len(slots) if slots is not None else config.num_windows)
        return windows

    monkeypatch.setattr(predict_module, "load_windows", counting)
    return counts


PLANS = {"fast": {"max_windows": 2, "threshold": 0.0}, "balanced": {"max_windows": 5, "threshold": 0.5},
         "thorough": {"max_windows": 12, "threshold": 1.0}}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return rounds_checkpoint(tmp_path_factory.mktemp("rounds"), plans=PLANS)


def top_after_first_round(clf, tracks):
    return {r.path: r.top.confidence for r in clf.predict(tracks, listen="fast", num_workers=0)}


def test_a_confident_track_is_decoded_at_the_first_round_only(model_path, tracks, decoded_windows):
    clf = GenreClassifier.load(model_path, device="cpu")
    first = top_after_first_round(clf, tracks)
    assert all(decoded_windows[t] == 2 for t in tracks)
    tops = sorted(first.values())
    assert tops[0] < tops[-1], "the tracks should not all be equally sure"
    threshold = (tops[len(tops) // 2 - 1] + tops[len(tops) // 2]) / 2
    decoded_windows.clear()
    results = clf.predict(tracks, listen=ListeningPlan(12, threshold), num_workers=0)
    for r in results:
        if first[r.path] >= threshold:  # sure after two windows: nothing more decoded
            assert r.windows == 2 and decoded_windows[r.path] == 2, r
        else:  # unsure: heard more, and only the windows it had not heard were decoded
            assert r.windows > 2 and decoded_windows[r.path] == r.windows, r
    assert {r.windows for r in results} - {2}, "some track should have been unsure"


def test_the_thorough_plan_hears_every_window_and_fast_two(model_path, tracks):
    clf = GenreClassifier.load(model_path, device="cpu")
    assert {r.windows for r in clf.predict(tracks, listen="thorough")} == {12}
    assert {r.windows for r in clf.predict(tracks, listen="fast")} == {2}


def test_the_answer_is_the_head_over_the_mean_of_the_heard_windows(model_path, tracks):
    clf = GenreClassifier.load(model_path, device="cpu")
    path = tracks[0]
    result = clf.predict([path], listen="thorough")[0]
    windows = load_windows(path, config=AUDIO)
    with torch.inference_mode():
        feats = clf.model.encode_audio(clf.model.frontend(torch.from_numpy(windows))).float()
        expected = torch.softmax(clf.model.classifier(feats.mean(0, keepdim=True)), dim=-1)[0].numpy()
    got = np.array([result.probabilities[g] for g in GENRES])
    assert np.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_batched_equals_one_by_one_in_rounds(model_path, tracks, device):
    clf = GenreClassifier.load(model_path, device=device)
    plan = ListeningPlan(12, 0.9)
    batched = clf.predict(tracks, listen=plan, batch_size=8)
    single = [clf.predict([t], listen=plan, batch_size=1)[0] for t in tracks]
    for a, b in zip(batched, single):
        assert a.windows == b.windows
        pa = np.array([a.probabilities[g] for g in GENRES])
        pb = np.array([b.probabilities[g] for g in GENRES])
        assert np.allclose(pa, pb, atol=2e-3 if device == "cuda" else 1e-5)


def test_the_cache_serves_later_runs_and_adds_only_what_is_missing(model_path, tracks, tmp_path, decoded_windows):
    with FeatureCache(tmp_path / "features.sqlite3") as cache:
        clf = GenreClassifier(GenreClassifier.load(model_path, device="cpu").checkpoint, device="cpu",
                              feature_cache=cache)
        fast = clf.predict(tracks, listen="fast")
        assert sum(decoded_windows.values()) == 2 * len(tracks)
        decoded_windows.clear()
        thorough = clf.predict(tracks, listen="thorough")
        # The two windows of the first run are not decoded again.
        assert all(decoded_windows[t] == 10 for t in tracks), decoded_windows
        decoded_windows.clear()
        again = clf.predict(tracks, listen="thorough")
        assert decoded_windows == {}, "a second run with the same budget decodes nothing"
        fast_again = clf.predict(tracks, listen="fast")
        assert decoded_windows == {}
    for a, b in zip(thorough, again):
        assert a.probabilities == b.probabilities and a.windows == b.windows == 12
    for a, b in zip(fast, fast_again):
        assert a.probabilities == b.probabilities and a.windows == b.windows == 2


def test_a_short_track_is_one_window_in_every_plan(model_path, tmp_path):
    import soundfile as sf

    clip = sorted((DATA_DIR / "gtzan").rglob("*.mp3"))[0]
    audio, sr = sf.read(clip, dtype="float32", frames=int(1.5 * 22050))
    short = tmp_path / "short.wav"
    sf.write(short, audio, sr)
    clf = GenreClassifier.load(model_path, device="cpu")
    for listen in ("fast", "thorough"):
        (r,) = clf.predict([str(short)], listen=listen)
        assert r.ok and r.windows == 1


def test_a_window_that_fails_to_decode_later_keeps_the_first_answer(model_path, tracks, monkeypatch, caplog):
    clf = GenreClassifier.load(model_path, device="cpu")
    first = clf.predict(tracks[:2], listen="fast", num_workers=0)
    real = predict_module.load_windows

    def failing_later(path, *, config, slots=None):
        if slots is not None and len(slots) != 2:
            raise OSError(f"{path}: read error")
        return real(path, config=config, slots=slots)

    monkeypatch.setattr(predict_module, "load_windows", failing_later)
    results = clf.predict(tracks[:2], listen="thorough", num_workers=0)
    for a, b in zip(first, results):
        assert b.ok and b.windows == 2 and a.probabilities == b.probabilities
    assert "classified from the windows heard before" in caplog.text


def test_predict_json_reports_the_windows_heard(model_path, tracks, capsys):
    import json

    assert cli_main(["predict", "--model", str(model_path), "--json", "--no-cache", "--listen", "fast",
                     *tracks[:2]]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["windows"] for line in lines] == [2, 2]
    assert cli_main(["predict", "--model", str(model_path), "--no-cache", "--listen", "thorough", tracks[0]]) == 0
    assert capsys.readouterr().out.rstrip().endswith("[lyrics: none, 12 windows]")
