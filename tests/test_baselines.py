"""benchmarks/baselines.py: the lyrics baselines read raw or cleaned text."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.baselines import lyrics_baseline  # noqa: E402

BODIES = ["la la love you baby\nnight road home", "money gun street\nla la love you baby",
          "night road home\nmoney gun street", "baby baby night\nroad road love"]


def _examples(n_each: int) -> list[SimpleNamespace]:
    # Same bodies in both genres; only genre A carries Genius-style headers and labels.
    out = []
    for i in range(n_each):
        body = BODIES[i % len(BODIES)]
        out.append(SimpleNamespace(genre="A", lyrics=f"{i} ContributorsSong {i} Lyrics\n[Chorus]\n{body}\n3Embed"))
        out.append(SimpleNamespace(genre="B", lyrics=body))
    return out


def test_raw_text_baseline_learns_the_headers_and_the_cleaned_one_cannot():
    train, test = _examples(12), _examples(4)
    raw = lyrics_baseline(train, test)
    cleaned = lyrics_baseline(train, test, cleaned=True)
    assert raw["accuracy"] == 1.0  # "Lyrics", "Chorus", "Embed" give genre A away
    assert cleaned["accuracy"] <= 0.75  # identical bodies: no better than a guess on what is left


def test_lyrics_cv_folds_keep_every_artist_on_one_side_and_test_each_song_once():
    from benchmarks.cv_lyrics import fold_splits
    from training.datasets import artist_group
    from training.examples import Example

    # 12 artists of 3 songs in 2 genres (spelt two ways), and 12 songs without an artist.
    songs = [Example(key=f"s{a}-{k}", genre="AB"[a % 2], artist=f" Artist  {a} " if k % 2 else f"artist {a}")
             for a in range(12) for k in range(3)]
    songs += [Example(key=f"solo{k}", genre="AB"[k % 2]) for k in range(12)]
    groups = [artist_group(e) for e in songs]
    assert len(set(groups)) == 12 + 12  # spellings of one artist share a group; solo songs are their own
    splits = fold_splits([e.genre for e in songs], groups, folds=4, seed=0, valid_parts=5)
    assert len(splits) == 4
    tested = [sum(s[i] == "test" for s in splits) for i in range(len(songs))]
    assert tested == [1] * len(songs)  # every song is tested exactly once
    for split in splits:
        assert {"train", "valid", "test"} <= set(split)
        sides: dict[str, set[str]] = {}
        for group, s in zip(groups, split):
            sides.setdefault(group, set()).add(s)
        assert all(len(v) == 1 for v in sides.values())  # an artist's songs share one side


def test_audio_cv_trains_each_fold_on_clips_whose_artists_it_never_tests(tmp_path, data_dir):
    """benchmarks/cv_audio.py hands train.py a manifest per fold: read back by training's own
    loader, every clip keeps the fold's split, and no artist is on both sides."""
    from benchmarks.cv_audio import write_fold_manifest
    from benchmarks.cv_lyrics import fold_splits
    from benchmarks.cv_pool import load_pool
    from training.datasets import artist_group, load_manifest

    pool = load_pool(data_dir)
    genres, groups = [c["genre"] for c in pool], [c["artist"] for c in pool]
    splits = fold_splits(genres, groups, folds=5, seed=0, valid_parts=7)
    tested = [0] * len(pool)
    for k, split in enumerate(splits):
        examples, skipped = load_manifest(write_fold_manifest(pool, split, tmp_path / f"fold{k}.csv"))
        assert not skipped and [e.split for e in examples] == split
        test_groups = {artist_group(e) for e in examples if e.split == "test"}
        assert test_groups and not test_groups & {artist_group(e) for e in examples if e.split != "test"}
        for i, s in enumerate(split):
            tested[i] += s == "test"
    assert tested == [1] * len(pool)


def test_audio_cv_scores_each_source_alone():
    """cv_audio's per-source scores count only that source's clips, with macro-F1 over the
    genres that source has (an Emotify row is not diluted by GTZAN's genres)."""
    from benchmarks.cv_audio import scores_by_source

    truth = ["Rock", "Pop", "Rock", "Blues", "Jazz", "Blues"]
    predicted = ["Rock", "Rock", "Rock", "Blues", None, "Jazz"]
    sources = ["emotify", "emotify", "emotify", "gtzan", "gtzan", "gtzan"]
    by = scores_by_source(truth, predicted, sources)
    assert set(by) == {"emotify", "gtzan"}
    assert by["emotify"]["n"] == 3 and abs(by["emotify"]["accuracy"] - 2 / 3) < 1e-12
    assert abs(by["emotify"]["macro_f1"] - (0.8 + 0.0) / 2) < 1e-12  # Rock F1 0.8, Pop 0
    assert by["gtzan"]["n"] == 3 and abs(by["gtzan"]["accuracy"] - 1 / 3) < 1e-12


@pytest.mark.parametrize("specs, recipes", [
    ([], [("shipped", "default_model.json")]),
    (["old=a.json", "new=b.json"], [("old", "a.json"), ("new", "b.json")]),
])
def test_audio_cv_recipes_are_named_configs(specs, recipes):
    from benchmarks.cv_audio import parse_recipes

    assert [(n, c.name) for n, c in parse_recipes(specs)] == recipes


@pytest.mark.parametrize("specs", [["no-equals-sign"], ["=a.json"], ["probe=a.json"], ["x=a.json", "x=b.json"]])
def test_audio_cv_refuses_a_recipe_without_its_own_name(specs):
    from benchmarks.cv_audio import parse_recipes

    with pytest.raises(SystemExit):
        parse_recipes(specs)
