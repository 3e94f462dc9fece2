"""The default model shipped in the package, on real clips and lyrics it never saw."""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest
import torch

from mmgenre_core.checkpoint import load_checkpoint
from mmgenre_core.cli import main as cli_main
from mmgenre_core.predict import GenreClassifier, default_model_path

from .conftest import DATA_DIR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The genres the shipped model learnt from real audio (Emotify, GTZAN, FMA sample).
AUDIO_GENRES = ["Blues", "Classical", "Country", "Electronic", "Hip-Hop", "International", "Jazz", "Pop", "Rock",
                "Soul-RnB"]


@pytest.fixture(scope="module")
def held_out():
    """The default config's own artist-disjoint test split: examples the model never trained on."""
    from training.config import load_config
    from training.datasets import build_dataset

    cfg = load_config(os.path.join(ROOT, "training", "configs", "default_model.json"),
                      [f"data_root={DATA_DIR}"])
    test = build_dataset(cfg).split("test")
    return [e for e in test if e.has_audio], [e for e in test if e.has_lyrics]


@pytest.fixture(scope="module")
def clf():
    return GenreClassifier.load(device="cpu")


def test_shipped_checkpoint_is_small_and_weights_only():
    path = default_model_path()
    assert path.is_file(), "mmgenre_core/models/default.pt is missing"
    assert path.stat().st_size <= 25 * 1024 * 1024
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "mmgenre-checkpoint"
    ckpt = load_checkpoint(path)
    assert set(AUDIO_GENRES) <= set(ckpt.genres)
    assert "Known limits" in ckpt.metadata["model_card"] and "Licences" in ckpt.metadata["model_card"]


def test_shipped_model_listens_with_the_frozen_pretrained_musicnn():
    from mmgenre_core.musicnn import load_pretrained

    ckpt = load_checkpoint(default_model_path())
    mc = ckpt.model_config
    assert mc.audio_branch == "musicnn" and not mc.musicnn_finetune and mc.lyrics_bow
    assert ckpt.audio_config.scale == "musicnn" and ckpt.audio_config.sample_rate == 16000
    # Frozen in training: the checkpoint carries musicnn's MSD weights unchanged.
    for k, v in load_pretrained().state_dict().items():
        assert torch.equal(ckpt.state_dict[f"cnn.backbone.{k}"], v), k


@pytest.fixture(scope="module")
def held_out_answers(clf, held_out):
    """The shipped model's top 3 (audio alone, as a library is tagged) on every held-out clip."""
    audio, _ = held_out
    results = clf.predict([e.path for e in audio], use_lyrics=False, top_k=3)
    assert all(r.ok for r in results)
    return [(e.genre, [g.genre for g in r.genres]) for e, r in zip(audio, results)]


def test_held_out_clips_get_sensible_genres(held_out_answers):
    """All 61 clips of the artist-disjoint test split (8 genres; the model answers 10).

    Measured with the shipped model (0.4.1, as 0.4.0): top-1 0.656, top-3 0.869.
    """
    n = len(held_out_answers)
    top1 = sum(truth == top[0] for truth, top in held_out_answers) / n
    top3 = sum(truth in top for truth, top in held_out_answers) / n
    assert n >= 50
    assert top1 >= 0.55, f"top-1 {top1:.2f}"
    assert top3 >= 0.78, f"top-3 {top3:.2f}"


# Per genre of the held-out split: the least share of its clips whose top-1 must be the
# true genre (measured recall in the comment), or for the genres with one or two held-out
# clips, that the true genre is among the top 3.
PER_GENRE_TOP1 = [
    ("Classical", 0.85),   # measured 17/17
    ("Electronic", 0.7),   # 9/10
    ("Jazz", 0.4),         # 3/5
    ("Rock", 0.3),         # 6/13 (Rock and Pop clips of Emotify go to Electronic)
    ("Pop", 0.25),         # 5/12
]
PER_GENRE_TOP3 = ["Blues", "Country", "Soul-RnB"]  # 2, 1 and 1 held-out clips, each in the top 3


@pytest.mark.parametrize("genre, minimum", PER_GENRE_TOP1)
def test_held_out_clips_of_each_genre(held_out_answers, genre, minimum):
    answers = [top for truth, top in held_out_answers if truth == genre]
    assert len(answers) >= 5, f"only {len(answers)} held-out {genre} clips"
    recall = sum(top[0] == genre for top in answers) / len(answers)
    assert recall >= minimum, (genre, recall, Counter(top[0] for top in answers))


@pytest.mark.parametrize("genre", PER_GENRE_TOP3)
def test_held_out_clips_of_small_genres_are_in_the_top_three(held_out_answers, genre):
    answers = [top for truth, top in held_out_answers if truth == genre]
    assert answers, f"no held-out {genre} clip"
    assert all(genre in top for top in answers), answers


def test_full_length_tracks(clf):
    """The seven full-length songs (2.5-5 min, Ogg Vorbis): three heavy rock/metal songs
    and four electronic/ambient tracks, labelled by ear (data README)."""
    tracks = sorted((DATA_DIR / "full_tracks").glob("*.ogg"))
    assert len(tracks) == 7
    results = clf.predict([str(t) for t in tracks], use_lyrics=False, top_k=2)
    expected = ["Rock" if t.name.startswith("muldjord") else "Electronic" for t in tracks]
    assert all(r.ok for r in results)
    top1 = [r.genres[0].genre for r in results]
    # Measured: 6 of 7 (the third metal song is Electronic 0.38, Rock 0.28), all in the top 2.
    assert sum(a == b for a, b in zip(top1, expected)) >= 5, list(zip(top1, expected))
    assert all(e in [g.genre for g in r.genres] for r, e in zip(results, expected)), top1


def test_shipped_model_is_calibrated_on_validation_data():
    """Temperatures fitted on the validation split (training/calibrate.py), and the card says so."""
    ckpt = load_checkpoint(default_model_path())
    calibration = ckpt.metadata["calibration"]
    assert calibration["fitted_on"] == "validation split"
    assert set(calibration["temperature"]) == {"audio", "lyrics", "both"}
    assert all(0.2 <= t <= 5 for t in calibration["temperature"].values())
    for split in ("valid", "test"):
        for kind in ("audio", "lyrics"):
            e = calibration["ece"][split][kind]
            assert e["n"] >= 50 and 0 <= e["after"] < 0.3, (split, kind, e)
    assert "## Calibration" in ckpt.metadata["model_card"]


def test_lyrics_alone_matches_tfidf_logistic_regression_within_noise(clf, held_out):
    """The HAN + bag-of-words branch, alone, against the classic baseline trained on the
    same training lyrics (benchmarks/baselines.py's), on the shipped model's own split.

    Measured with 0.4.1 (as 0.4.0): accuracy 53.8% against 55.0%, macro-F1 0.285 against 0.308 on
    these 80 songs (0.3.0: 55.0% and 0.319). One split of 80 songs has a standard error of
    about 5.6 points in accuracy (one song is 1.25) and about 0.04 in macro-F1, so the
    model must be within one standard error on accuracy and 0.03 on macro-F1; a broken
    lyrics branch (e.g. the wrong bag-of-words scaling) lands far below.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from training.config import load_config
    from training.datasets import build_dataset

    cfg = load_config(os.path.join(ROOT, "training", "configs", "default_model.json"), [f"data_root={DATA_DIR}"])
    train = [e for e in build_dataset(cfg).split("train") if e.has_lyrics]
    _, lyrics = held_out
    lyrics = [e for e in lyrics if e.genre in {t.genre for t in train}]
    baseline = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
                             LogisticRegression(max_iter=5000, C=10.0))
    baseline.fit([e.lyrics for e in train], [e.genre for e in train])
    truth = [e.genre for e in lyrics]
    theirs = list(baseline.predict([e.lyrics for e in lyrics]))
    ours = [r.genres[0].genre for r in clf.predict_lyrics([e.lyrics for e in lyrics], top_k=1)]
    base_acc = sum(p == t for p, t in zip(theirs, truth)) / len(truth)
    our_acc = sum(p == t for p, t in zip(ours, truth)) / len(truth)
    standard_error = (base_acc * (1 - base_acc) / len(truth)) ** 0.5
    assert our_acc >= base_acc - standard_error, (our_acc, base_acc, standard_error)
    base_f1 = f1_score(truth, theirs, average="macro", zero_division=0)
    our_f1 = f1_score(truth, ours, average="macro", zero_division=0)
    assert our_f1 >= base_f1 - 0.03, (our_f1, base_f1)


def test_lyrics_alone_is_better_than_a_constant_guess(clf, held_out):
    """Lyrics alone must discriminate: its macro-F1 (measured 0.32) far beats always
    answering the majority genre (0.056), and it answers several genres."""
    from sklearn.metrics import f1_score

    _, lyrics = held_out
    assert len(lyrics) >= 40
    truth = [e.genre for e in lyrics]
    results = clf.predict_lyrics([e.lyrics for e in lyrics], top_k=1)
    predicted = [r.genres[0].genre for r in results]
    majority = Counter(truth).most_common(1)[0][0]
    model_f1 = f1_score(truth, predicted, average="macro", zero_division=0)
    constant_f1 = f1_score(truth, [majority] * len(truth), average="macro", zero_division=0)
    assert len(set(predicted)) >= 3
    assert model_f1 > 3 * constant_f1, (model_f1, constant_f1)


def test_track_with_lyrics_without_and_lyrics_alone(clf, held_out, tmp_path, capsys):
    audio, lyrics = held_out
    clip = audio[0].path
    text = lyrics[0].lyrics
    with_lyrics = clf.predict([clip], lyrics=[text], top_k=len(clf.genres))[0]
    without = clf.predict([clip], use_lyrics=False, top_k=len(clf.genres))[0]
    alone = clf.predict_lyrics([text], top_k=len(clf.genres))[0]
    assert with_lyrics.lyrics == "given" and without.lyrics == "none"
    for r in (with_lyrics, without, alone):
        assert abs(sum(r.probabilities.values()) - 1) < 1e-4
    # Lyrics move the fused prediction.
    assert with_lyrics.probabilities != pytest.approx(without.probabilities, abs=1e-3)
    # The CLI uses the shipped model when no --model is given.
    assert cli_main(["predict", "--json", "--no-lyrics", clip]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["error"] is None and rec["genres"][0]["genre"] == without.genres[0].genre


def test_info_prints_the_model_card(capsys):
    assert cli_main(["info"]) == 0
    out = capsys.readouterr().out
    assert "Genres it can output" in out and "Held-out test split" in out
    assert "audio musicnn (MSD-pretrained, frozen" in out and "TF-IDF bag of words" in out
    # The model beside the baselines on its own split (model_card.py --comparison), the
    # per-genre table from cross-validation (--per-genre) and the calibration.
    assert "Compared with classic baselines" in out
    for row in ("musicnn audio branch", "MFCC stats + logistic regression", "TF-IDF + logistic regression",
                "| Classical | 116 |", "| Folk | 1 |", "not supported", "## Calibration"):
        assert row in out, row
