"""benchmarks/baselines.py: the lyrics baselines read raw or cleaned text."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

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
    from benchmarks.cv_lyrics import artist_group, fold_splits

    # 12 artists of 3 songs in 2 genres, and 12 songs without an artist (each its own group).
    records = [{"id": f"s{a}-{k}", "artist": f" Artist  {a} " if a % 2 else f"artist {a}", "genre": "AB"[a % 2],
                "lyrics": "x"} for a in range(12) for k in range(3)]
    records += [{"id": f"solo{k}", "artist": "", "genre": "AB"[k % 2], "lyrics": "x"} for k in range(12)]
    splits = fold_splits(records, folds=4, seed=0, valid_parts=5)
    assert len(splits) == 4
    tested = [sum(s[i] == "test" for s in splits) for i in range(len(records))]
    assert tested == [1] * len(records)  # every song is tested exactly once
    for split in splits:
        assert {"train", "valid", "test"} <= set(split)
        sides: dict[str, set[str]] = {}
        for rec, s in zip(records, split):
            sides.setdefault(artist_group(rec), set()).add(s)
        assert all(len(v) == 1 for v in sides.values())  # an artist's songs share one side
    assert artist_group(records[3]) == artist_group({"id": "other", "artist": "artist 1"})
    assert artist_group(records[-1]) == "track:solo11"
