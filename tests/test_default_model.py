"""The default model shipped in the package, and its recipe on real clips and songs it never saw.

The shipped model was fitted on every labelled clip and song (nothing is held out of
it: cross-validation is its estimate). So quality is tested on the recipe: the same
heads (training/window_head.py, training/frozen_heads.py, the default config's
settings) fitted on the artists of four folds of five and scored on the artists of the
fifth, as the shipped model hears a track (its own listening plans, its backbone).
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from mmgenre_core.audio import listening_order
from mmgenre_core.checkpoint import load_checkpoint
from mmgenre_core.cli import main as cli_main
from mmgenre_core.predict import GenreClassifier, default_model_path

from .conftest import DATA_DIR

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
#: The genres the shipped model learnt from real audio (Emotify, GTZAN, FMA sample).
AUDIO_GENRES = ["Blues", "Classical", "Country", "Electronic", "Hip-Hop", "International", "Jazz", "Pop", "Rock",
                "Soul-RnB"]


@pytest.fixture(scope="module")
def clf():
    return GenreClassifier.load(device="cpu")


@pytest.fixture(scope="module")
def cfg():
    from training.config import load_config

    return load_config(ROOT / "training" / "configs" / "default_model.json", [f"data_root={DATA_DIR}"])


def test_shipped_checkpoint_is_small_and_weights_only():
    path = default_model_path()
    assert path.is_file(), "mmgenre_core/models/default.pt is missing"
    # 0.6.0 and 0.7.0: 32 MB, three quarters of it the lyrics head over the text's 465,000 n-grams
    # (keys, idf and 10 genres' weights); 0.5.3's 120,000-column bag was 14 MB.
    assert path.stat().st_size <= 40 * 1024 * 1024
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "mmgenre-checkpoint"
    ckpt = load_checkpoint(path)
    assert ckpt.genres == AUDIO_GENRES
    assert "Known limits" in ckpt.metadata["model_card"] and "Licences" in ckpt.metadata["model_card"]


def test_shipped_model_listens_with_the_frozen_pretrained_musicnn_in_rounds(clf):
    from mmgenre_core.musicnn import load_pretrained

    ckpt = load_checkpoint(default_model_path())
    mc = ckpt.model_config
    assert mc.audio_branch == "musicnn" and not mc.musicnn_finetune and mc.lyrics_bow
    assert ckpt.audio_config.scale == "musicnn" and ckpt.audio_config.sample_rate == 16000
    for k, v in load_pretrained().state_dict().items():
        assert torch.equal(ckpt.state_dict[f"cnn.backbone.{k}"], v), k
    # Two windows first, five or twelve while unsure (benchmarks/cv_windows.py chose the plans).
    assert listening_order(ckpt.audio_config)[1] == [2, 5, 12]
    assert clf.plans["fast"].max_windows == 2
    assert clf.plans["balanced"].max_windows == 5 and 0.3 <= clf.plans["balanced"].threshold <= 0.9
    assert clf.plans["thorough"].max_windows == 12


# --------------------------------------------------------------- audio: the recipe on unseen artists
@pytest.fixture(scope="module")
def held_out_audio(clf, cfg):
    """The audio recipe fitted on four folds of artists and heard on the fifth.

    Every labelled clip's features at the balanced plan's windows (the first five in
    listening order: what that plan can hear), through the shipped model's backbone;
    genres with fewer than 5 training clips are left out of the fit, as training does.
    Returns (truth, answered genre, windows heard) for the held-out clips.
    """
    from benchmarks.cv_lyrics import fold_splits
    from benchmarks.cv_pool import load_pool
    from mmgenre_core.native_stderr import filtered_native_stderr
    from training.frozen_heads import clip_window_features
    from training.window_head import fit_window_head, listen

    pool = load_pool(DATA_DIR)
    order, ends = listening_order(clf.audio_config)
    heard = clf.plans["balanced"].max_windows
    with filtered_native_stderr():
        feats, errors = clip_window_features(clf.model, [c["path"] for c in pool], slots=order[:heard])
    assert errors == [None] * len(pool)
    genres = [c["genre"] for c in pool]
    artists = [c["artist"] for c in pool]
    split = fold_splits(genres, artists, folds=5, seed=0, valid_parts=7)[0]
    fit = [i for i, s in enumerate(split) if s != "test"]
    enough = sorted(g for g, n in Counter(genres[i] for i in fit).items() if n >= cfg.data.min_train_examples)
    fit = [i for i in fit if genres[i] in enough]
    test = [i for i, s in enumerate(split) if s == "test"]
    assert not {artists[i] for i in fit} & {artists[i] for i in test}
    t = cfg.train
    counts = [c for c in ends if c <= heard]
    head, _ = fit_window_head(feats[fit], np.array([enough.index(genres[i]) for i in fit]),
                              [artists[i] for i in fit], order=order, counts=counts, n_classes=len(enough),
                              l2_grid=t.probe_l2, power=t.class_weight_power, inner_folds=t.head_folds,
                              seed=cfg.seed)
    from mmgenre_core.listening import window_count_rows

    rows = window_count_rows(feats[test], order, counts)
    probs = np.stack([head.probabilities(rows[:, k]) for k in range(len(counts))], axis=1)
    chosen, windows = listen(probs, clf.plans["balanced"], counts=counts)
    return [genres[i] for i in test], [enough[j] for j in chosen.argmax(1)], windows


def test_held_out_artists_get_sensible_genres(held_out_audio):
    """96 clips of artists the fit never heard (fold 0 of benchmarks/cv_windows.py's seed 0).

    Measured: accuracy 0.833 at 2.84 windows a clip (cv_windows.py: 76.7% over all 15 folds;
    this fold is one of the easier ones).
    """
    truth, said, windows = held_out_audio
    accuracy = np.mean([a == b for a, b in zip(truth, said)])
    assert len(truth) >= 90
    assert accuracy >= 0.72, accuracy
    assert 2.0 < windows.mean() < 4.0, windows.mean()


# Least recall per genre with at least 5 clips held out; measured: Classical 23/23,
# Electronic 14/14, Blues 12/12, Rock 14/18, Pop 11/16, Jazz 3/5.
PER_GENRE_RECALL = [("Classical", 0.85), ("Electronic", 0.75), ("Blues", 0.7), ("Rock", 0.55), ("Pop", 0.45),
                    ("Jazz", 0.4)]


@pytest.mark.parametrize("genre, minimum", PER_GENRE_RECALL)
def test_held_out_artists_of_each_genre(held_out_audio, genre, minimum):
    truth, said, _ = held_out_audio
    assert_recall(truth, said, genre, minimum, least=5)


def assert_recall(truth: list[str], said: list[str], genre: str, minimum: float, *, least: int) -> None:
    """``genre``'s recall among the answers ``said`` is at least ``minimum``, over at least ``least`` examples."""
    answers = [s for t, s in zip(truth, said) if t == genre]
    assert len(answers) >= least, f"only {len(answers)} held-out {genre} examples"
    recall = sum(a == genre for a in answers) / len(answers)
    assert recall >= minimum, (genre, recall, Counter(answers))


def test_full_length_tracks(clf):
    """The seven full-length songs (2.5-5 min, Ogg Vorbis): three heavy rock/metal songs
    and four electronic/ambient tracks, labelled by ear (data README).

    Measured (balanced): the four electronic tracks Electronic; the metal songs are unlike
    every training genre and come out Rock 0.47, Country 0.35 and Electronic 0.56 (a known
    limit in the card); heard thoroughly, Rock is in the top three of each.
    """
    tracks = sorted((DATA_DIR / "full_tracks").glob("*.ogg"))
    assert len(tracks) == 7
    results = clf.predict([str(t) for t in tracks], top_k=3)
    assert all(r.ok for r in results)
    for t, r in zip(tracks, results):
        if not t.name.startswith("muldjord"):
            assert r.top.genre == "Electronic", (t.name, r.genres)
    thorough = clf.predict([str(t) for t in tracks if t.name.startswith("muldjord")], top_k=3, listen="thorough")
    for r in thorough:
        assert r.windows == 12 or r.top.confidence >= clf.plans["thorough"].threshold
        assert "Rock" in [g.genre for g in r.genres], r.genres


def test_shipped_model_is_calibrated_out_of_fold():
    """Temperatures fitted on the inner cross-validation's out-of-fold answers, and the card says so."""
    ckpt = load_checkpoint(default_model_path())
    calibration = ckpt.metadata["calibration"]
    assert calibration["fitted_on"].startswith("out-of-fold answers")
    assert set(calibration["temperature"]) == {"audio", "lyrics", "both"}
    assert all(0.2 <= t <= 5 for t in calibration["temperature"].values())
    assert "## Calibration" in ckpt.metadata["model_card"]


# --------------------------------------------------------------- lyrics: the recipe on unseen artists
@pytest.fixture(scope="module")
def lyrics_split(cfg):
    from benchmarks.cv_lyrics import fold_splits
    from training.datasets import artist_group, build_dataset

    songs = [e for e in build_dataset(cfg).examples if e.has_lyrics]
    split = fold_splits([e.genre for e in songs], [artist_group(e) for e in songs], folds=5, seed=0,
                        valid_parts=7)[0]
    train = [e for e, s in zip(songs, split) if s != "test"]
    test = [e for e, s in zip(songs, split) if s == "test" and e.genre in {t.genre for t in train}]
    return train, test


@pytest.fixture(scope="module")
def held_out_lyrics(clf, cfg, lyrics_split):
    """The shipped lyrics recipe (training/frozen_heads.py's bag-of-words head) and TF-IDF
    (1-2 grams) + LogReg, both fitted on the same artist-disjoint split's training songs.

    The bag's vocabulary and idf are the shipped model's (from all the songs: a word list,
    no labels). Returns (true genres, the recipe's answers, TF-IDF's answers) of the test songs.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from training.datasets import artist_group
    from training.frozen_heads import bags_of_texts, fit_lyrics_head

    train, test = lyrics_split
    genres = sorted({e.genre for e in train})

    def bag(songs):  # sparse: ~12,000 songs x the bag's columns
        return bags_of_texts(clf.model.bow, [e.lyrics for e in songs], vocab=clf.vocab, text_config=clf.text_config)

    t = cfg.train
    head = fit_lyrics_head(bag(train), np.array([genres.index(e.genre) for e in train]),
                           np.array([artist_group(e) for e in train]), n_classes=len(genres),
                           l2_grid=[clf.checkpoint.metrics["inner_cv"]["lyrics"]["l2"]],  # the shipped one: 4x faster
                           power=t.lyrics_weight_power, folds=t.head_folds, seed=cfg.seed, max_iter=t.probe_max_iter,
                           domains=np.array([e.domain for e in train], dtype=object), loss=t.lyrics_loss)
    ours = [genres[j] for j in (torch.sparse.mm(bag(test), head["weight"].T) + head["bias"]).argmax(1).tolist()]
    baseline = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
                             LogisticRegression(max_iter=5000, C=10.0))
    baseline.fit([e.lyrics for e in train], [e.genre for e in train])
    theirs = list(baseline.predict([e.lyrics for e in test]))
    return [e.genre for e in test], ours, theirs


def test_lyrics_recipe_matches_tfidf_logistic_regression_within_noise(held_out_lyrics):
    """The recipe must be within one standard error of TF-IDF on accuracy and 0.04 on macro-F1."""
    from sklearn.metrics import f1_score

    truth, ours, theirs = held_out_lyrics
    base_acc = np.mean([p == g for p, g in zip(theirs, truth)])
    our_acc = np.mean([p == g for p, g in zip(ours, truth)])
    standard_error = (base_acc * (1 - base_acc) / len(truth)) ** 0.5
    assert our_acc >= base_acc - standard_error, (our_acc, base_acc, standard_error)
    base_f1 = f1_score(truth, theirs, average="macro", zero_division=0)
    our_f1 = f1_score(truth, ours, average="macro", zero_division=0)
    assert our_f1 >= base_f1 - 0.04, (our_f1, base_f1)


# Least recall per genre of the 2,921 held-out songs (artists the fit never read), about two
# standard errors below what was measured (0.7.0): Rock 938/1067, Hip-Hop 238/303,
# International 229/354, Country 184/330, Blues 150/240, Pop 39/187, Soul-RnB 21/165, Jazz
# 24/103, Electronic 8/172 (lyrics alone hardly know Electronic or Soul-RnB: most of them are
# read as Rock or Hip-Hop).
LYRICS_RECALL = [("Rock", 0.85), ("Hip-Hop", 0.7), ("International", 0.6), ("Country", 0.48), ("Blues", 0.5),
                 ("Pop", 0.15), ("Soul-RnB", 0.07), ("Jazz", 0.15), ("Electronic", 0.015)]


@pytest.mark.parametrize("genre, minimum", LYRICS_RECALL)
def test_held_out_songs_of_each_genre(held_out_lyrics, genre, minimum):
    truth, ours, _ = held_out_lyrics
    assert_recall(truth, ours, genre, minimum, least=30)


def test_lyrics_alone_answers_several_genres(clf, lyrics_split):
    """The shipped lyrics head must discriminate: on real songs it answers several genres."""
    _, test = lyrics_split
    predicted = [r.genres[0].genre for r in clf.predict_lyrics([e.lyrics for e in test], top_k=1)]
    assert len(set(predicted)) >= 4, Counter(predicted)


def test_track_with_lyrics_without_and_lyrics_alone(clf, lyrics_split, capsys):
    clip = str(sorted((DATA_DIR / "gtzan").rglob("*.mp3"))[0])
    text = next(e.lyrics for e in lyrics_split[1] if e.genre == "Hip-Hop" and len(e.lyrics) > 500)
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
    assert rec["windows"] == without.windows >= 2


def test_a_track_with_both_uses_the_fusion_rule_learnt_on_pairs(clf):
    """metadata.fusion: the lyrics weight learnt on genre-matched pairs of out-of-fold answers
    (training/fusion.py), applied as a scale on a with-audio track's lyrics vector."""
    fusion = clf.checkpoint.metadata["fusion"]
    t = clf.temperatures
    assert 0.0 < fusion["lyrics_weight"] < 4.0 and fusion["pairs"] >= 1000
    assert clf.model.lyrics_scale_with_audio == pytest.approx(fusion["lyrics_weight"] * t["audio"] / t["lyrics"],
                                                             rel=1e-4)
    assert t["both"] == t["audio"]
    accuracy = fusion["inner_cv_accuracy"]
    assert accuracy["fused"] > accuracy["audio"] > accuracy["lyrics"]


def test_a_lyrics_only_row_gets_the_lyrics_head_bias(clf):
    """The fused layer holds both heads: a row without audio reads the learned "no audio"
    vector, set so that the audio columns give the lyrics head's bias there (frozen_heads)."""
    blocks = {b.name: b for b in clf.model.head_blocks()}
    a = blocks["audio"]
    weight = clf.model.classifier.weight.detach()
    lyrics_bias = weight[:, a.start:a.stop] @ clf.model.no_audio.detach() + clf.model.classifier.bias.detach()
    empty = clf.predict_lyrics([None], top_k=len(clf.genres))[0]
    expected = torch.softmax(lyrics_bias / clf.temperatures["lyrics"], dim=0)
    got = torch.tensor([empty.probabilities[g] for g in clf.genres])
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.count_nonzero(weight[:, blocks["han"].start:blocks["han"].stop]) == 0  # the HAN is unused


def test_info_prints_the_model_card(capsys):
    assert cli_main(["info"]) == 0
    out = capsys.readouterr().out
    assert "Genres it can output" in out and "## Listening plans" in out
    assert "audio musicnn (MSD-pretrained, frozen" in out and "TF-IDF bag of words" in out
    for row in ("cv_windows.py", "| Classical | 116 |", "| Folk | 1 |", "not supported", "## Calibration",
                "fast: up to 2 windows", "balanced: up to 5 windows", "thorough: up to 12 windows"):
        assert row in out, row


def test_the_default_config_ships_what_cross_validation_measured(cfg):
    """The config is the one benchmarks/cv_windows.py measured: its windows, rounds, grid."""
    from benchmarks.cv_windows import DEFAULT_BUDGET, L2_GRID, MIN_TRAIN_CLIPS

    t = cfg.train
    assert t.frozen_heads and cfg.data.valid_fraction == 0 and cfg.data.test_fraction == 0
    assert tuple(t.probe_l2) == L2_GRID and t.listen_budget == DEFAULT_BUDGET
    assert cfg.data.min_train_examples == MIN_TRAIN_CLIPS
    results = json.loads((ROOT / "benchmarks" / "results" / "cv_windows.json").read_text(encoding="utf-8"))
    audio = cfg.audio_config()
    assert results["order"] == list(audio.window_order) and results["counts"] == list(audio.window_rounds)
    assert os.path.getsize(ROOT / "benchmarks" / "results" / "cv_windows.png") > 10_000
