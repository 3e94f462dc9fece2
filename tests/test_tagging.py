"""The plugin's pure tagging rules: genre_map, whitelist, threshold/count, force/keep_existing, albums."""

from __future__ import annotations

import pytest

from beetsplug.mmgenre import tagging
from beetsplug.mmgenre.tagging import (SKIP_HAS_GENRES, SKIP_LOW_CONFIDENCE, SKIP_NOT_ALLOWED, SKIP_UNFAMILIAR,
                                  SKIPPED, TAGGED, UNCHANGED, TaggingOptions, combine_probabilities, decide, rank_genres,
                                  select_genres)

PROBS = {"Classical": 0.1, "Electronic": 0.2, "Pop": 0.3, "Rock": 0.4}
FMA = {"Hip-Hop": 0.5, "Old-Time / Historic": 0.3, "Rock": 0.15, "Soul-RnB": 0.05}


@pytest.mark.parametrize(
    "probs, options, expected",
    [
        pytest.param(PROBS, {}, [("Rock", 0.4), ("Pop", 0.3), ("Electronic", 0.2), ("Classical", 0.1)],
                     id="no-map-best-first"),
        pytest.param(FMA, {"genre_map": {"Hip-Hop": "Hip Hop", "Old-Time / Historic": "Historic"}},
                     [("Hip Hop", 0.5), ("Historic", 0.3), ("Rock", 0.15), ("Soul-RnB", 0.05)],
                     id="rename-like-the-issue"),
        pytest.param(FMA, {"genre_map": {"hip-hop": "Hip Hop"}},
                     [("Hip Hop", 0.5), ("Old-Time / Historic", 0.3), ("Rock", 0.15), ("Soul-RnB", 0.05)],
                     id="map-keys-case-insensitive"),
        pytest.param(PROBS, {"genre_map": {"Rock": "Guitar", "Pop": "Guitar"}},
                     [("Guitar", 0.7), ("Electronic", 0.2), ("Classical", 0.1)], id="merged-genres-add-up"),
        pytest.param(PROBS, {"genre_map": {"Rock": None, "Pop": ""}}, [("Electronic", 0.2), ("Classical", 0.1)],
                     id="mapped-to-nothing-is-dropped"),
        pytest.param(PROBS, {"whitelist": ["pop", "Electronic"]}, [("Pop", 0.3), ("Electronic", 0.2)],
                     id="whitelist-case-insensitive"),
        pytest.param(PROBS, {"whitelist": "Pop, Classical"}, [("Pop", 0.3), ("Classical", 0.1)],
                     id="whitelist-as-comma-string"),
        pytest.param(FMA, {"genre_map": {"Hip-Hop": "Hip Hop"}, "whitelist": ["hip hop"]}, [("Hip Hop", 0.5)],
                     id="whitelist-applies-to-mapped-names"),
        pytest.param(FMA, {"genre_map": {"Hip-Hop": "Hip Hop"}, "whitelist": ["Hip-Hop"]}, [],
                     id="whitelist-does-not-know-model-names-once-mapped"),
        pytest.param({"A": 0.25, "B": 0.25, "C": 0.5}, {}, [("C", 0.5), ("A", 0.25), ("B", 0.25)],
                     id="ties-keep-model-order"),
    ],
)
def test_rank_genres(probs, options, expected):
    ranked = rank_genres(probs, TaggingOptions(**options))
    assert [g for g, _ in ranked] == [g for g, _ in expected]
    assert [c for _, c in ranked] == pytest.approx([c for _, c in expected])


@pytest.mark.parametrize(
    "count, min_confidence, expected",
    [
        pytest.param(1, 0.3, ["Rock"], id="default-count-one"),
        pytest.param(2, 0.3, ["Rock", "Pop"], id="count-two"),
        pytest.param(3, 0.3, ["Rock", "Pop"], id="threshold-cuts-before-count"),
        pytest.param(3, 0.15, ["Rock", "Pop", "Electronic"], id="low-threshold"),
        pytest.param(1, 0.4, ["Rock"], id="threshold-equal-passes"),
        pytest.param(1, 0.41, [], id="nothing-confident-enough"),
        pytest.param(10, 0.0, ["Rock", "Pop", "Electronic", "Classical"], id="everything"),
    ],
)
def test_select_genres(count, min_confidence, expected):
    options = TaggingOptions(count=count, min_confidence=min_confidence)
    assert [g for g, _ in select_genres(rank_genres(PROBS, options), options)] == expected


@pytest.mark.parametrize(
    "options, message",
    [
        pytest.param({"count": 0}, "count", id="count-zero"),
        pytest.param({"min_confidence": 1.5}, "min_confidence", id="threshold-above-one"),
        pytest.param({"min_confidence": -0.1}, "min_confidence", id="negative-threshold"),
        pytest.param({"genre_map": {"Rock": ["A", "B"]}}, "genre_map", id="map-to-a-list"),
    ],
)
def test_invalid_options(options, message):
    with pytest.raises(ValueError, match=message):
        TaggingOptions(**options)


RANKED = [("Rock", 0.4), ("Pop", 0.3), ("Electronic", 0.2)]


@pytest.mark.parametrize(
    "current, ours, options, ranked, status, genres, added, reason, touch",
    [
        pytest.param([], [], {}, RANKED, TAGGED, ["Rock"], ["Rock"], None, True, id="empty-gets-tagged"),
        pytest.param(["Jazz"], [], {}, RANKED, SKIPPED, ["Jazz"], [], SKIP_HAS_GENRES, False,
                     id="user-genre-kept-by-default"),
        pytest.param(["Jazz"], [], {"force": True}, RANKED, TAGGED, ["Rock"], ["Rock"], None, True,
                     id="force-replaces"),
        pytest.param(["Jazz"], [], {"keep_existing": True}, RANKED, TAGGED, ["Jazz", "Rock"], ["Rock"], None,
                     True, id="keep-existing-merges"),
        pytest.param(["Jazz"], [], {"keep_existing": True, "force": True}, RANKED, TAGGED, ["Jazz", "Rock"],
                     ["Rock"], None, True, id="keep-existing-wins-over-force"),
        pytest.param(["rock"], [], {"keep_existing": True}, RANKED, UNCHANGED, ["rock"], [], None, False,
                     id="merge-is-case-insensitive"),
        pytest.param(["Pop"], ["Pop"], {}, RANKED, TAGGED, ["Rock"], ["Rock"], None, True,
                     id="rerun-replaces-own-guess-without-force"),
        # Unchanged means untouched: the mmgenre_* fields keep describing the run that wrote them.
        pytest.param(["Rock"], ["Rock"], {}, RANKED, UNCHANGED, ["Rock"], ["Rock"], None, False,
                     id="rerun-same-answer-unchanged"),
        pytest.param(["Rock"], [], {"force": True}, RANKED, UNCHANGED, ["Rock"], [], None, False,
                     id="user-genre-the-model-agrees-with-stays-the-users"),
        # Ownership is exact: a user who turned mmgenre's "Pop" into "pop" owns it.
        pytest.param(["pop"], ["Classical", "Rock", "Pop"], {}, RANKED, SKIPPED, ["pop"],
                     ["Classical", "Rock", "Pop"], SKIP_HAS_GENRES, False, id="user-recased-our-guess-owns-it"),
        pytest.param(["classical"], ["Classical"], {"count": 2}, [("Classical", 0.6), ("Rock", 0.3)], SKIPPED,
                     ["classical"], ["Classical"], SKIP_HAS_GENRES, False, id="user-lowercased-our-guess-owns-it"),
        pytest.param(["pop"], ["Pop"], {"keep_existing": True}, RANKED, TAGGED, ["pop", "Rock"], ["Rock"], None,
                     True, id="keep-existing-keeps-the-users-spelling"),
        pytest.param(["Hip  Hop"], [], {"keep_existing": True}, RANKED, TAGGED, ["Hip  Hop", "Rock"], ["Rock"],
                     None, True, id="keep-existing-keeps-user-genres-verbatim"),
        pytest.param(["Jazz", "Pop"], ["Pop"], {}, RANKED, SKIPPED, ["Jazz", "Pop"], ["Pop"], SKIP_HAS_GENRES,
                     False, id="user-added-a-genre-after-us"),
        pytest.param(["Jazz", "Pop"], ["Pop"], {"keep_existing": True}, RANKED, TAGGED, ["Jazz", "Rock"],
                     ["Rock"], None, True, id="keep-existing-drops-own-stale-guess"),
        pytest.param([], [], {"min_confidence": 0.5}, RANKED, SKIPPED, [], [], SKIP_LOW_CONFIDENCE, False,
                     id="below-threshold"),
        # Skipped means untouched: the old guess and the fields describing it stay in step.
        pytest.param(["Pop"], ["Pop"], {"min_confidence": 0.5}, RANKED, SKIPPED, ["Pop"], ["Pop"],
                     SKIP_LOW_CONFIDENCE, False, id="below-threshold-keeps-own-old-guess"),
        pytest.param(["Jazz"], [], {"force": True, "min_confidence": 0.5}, RANKED, SKIPPED, ["Jazz"], [],
                     SKIP_LOW_CONFIDENCE, False, id="force-never-empties-user-genres"),
        pytest.param([], [], {}, [], SKIPPED, [], [], SKIP_NOT_ALLOWED, False, id="whitelist-left-nothing"),
        pytest.param([], [], {"count": 2}, RANKED, TAGGED, ["Rock", "Pop"], ["Rock", "Pop"], None, True,
                     id="count-two"),
    ],
)
def test_decide(current, ours, options, ranked, status, genres, added, reason, touch):
    decision = decide(current, ours, ranked, TaggingOptions(**options))
    assert (decision.status, decision.genres, decision.added, decision.reason, decision.touch) == (
        status, genres, added, reason, touch)
    assert decision.top == (ranked[0] if ranked else None)


@pytest.mark.parametrize(
    "current, ours, options, status, genres, reason",
    [
        pytest.param([], [], {}, SKIPPED, [], SKIP_UNFAMILIAR, id="left-untagged"),
        pytest.param(["Pop"], ["Pop"], {}, SKIPPED, ["Pop"], SKIP_UNFAMILIAR, id="own-old-guess-kept-untouched"),
        pytest.param(["Jazz"], [], {"force": True}, SKIPPED, ["Jazz"], SKIP_UNFAMILIAR, id="force-never-empties"),
        pytest.param(["Jazz"], [], {}, SKIPPED, ["Jazz"], SKIP_HAS_GENRES, id="user-genres-first"),
        pytest.param([], [], {"fallback": "Unknown"}, TAGGED, ["Unknown"], None, id="fallback-still-applies"),
        pytest.param([], [], {"skip_unfamiliar": False}, TAGGED, ["Rock"], None, id="unfamiliar-tag"),
    ],
)
def test_decide_unfamiliar(current, ours, options, status, genres, reason):
    """A track the open-set score flags is left as it was, even when its top genre is confident."""
    decision = decide(current, ours, RANKED, TaggingOptions(**options), unfamiliar=True)
    assert (decision.status, decision.genres, decision.reason) == (status, genres, reason)
    assert decision.touch == (status == TAGGED)


def test_skip_reason_means_no_classification_needed():
    options = TaggingOptions()
    assert tagging.skip_reason(["Jazz"], [], options) == SKIP_HAS_GENRES
    assert tagging.skip_reason(["Rock"], ["Rock"], options) is None
    assert tagging.skip_reason([], [], options) is None
    assert tagging.skip_reason(["Jazz"], [], TaggingOptions(force=True)) is None


@pytest.mark.parametrize(
    "dists, weights, expected",
    [
        pytest.param([{"Pop": 0.55, "Rock": 0.45}, {"Pop": 0.55, "Rock": 0.45}, {"Pop": 0.0, "Rock": 1.0}], None,
                     {"Pop": 1.1 / 3, "Rock": 1.9 / 3}, id="mean-beats-majority"),
        pytest.param([{"Pop": 1.0, "Rock": 0.0}, {"Pop": 0.0, "Rock": 1.0}], [60.0, 240.0],
                     {"Pop": 0.2, "Rock": 0.8}, id="length-weighted"),
        pytest.param([{"Pop": 1.0}, {"Rock": 1.0}], [0.0, 0.0], {"Pop": 0.5, "Rock": 0.5},
                     id="unknown-lengths-equal-weights"),
        pytest.param([{"Pop": 1.0}, {"Rock": 1.0}], [None, 100.0], {"Pop": 0.0, "Rock": 1.0},
                     id="missing-length-weight-zero"),
        pytest.param([], None, {}, id="no-tracks"),
    ],
)
def test_combine_probabilities(dists, weights, expected):
    out = combine_probabilities(dists, weights)
    assert out.keys() == expected.keys()
    for genre, p in expected.items():
        assert out[genre] == pytest.approx(p)


def test_unique_genres_and_keys():
    assert tagging.unique_genres(["Rock", " rock ", "Hip  Hop", "", None, "hip hop"]) == ["Rock", "Hip Hop"]
    assert tagging.genre_key("  Hip   HOP ") == "hip hop"
    # Ownership is exact: "rock" is the user's even beside mmgenre's "Rock".
    assert tagging.user_genres(["Jazz", "rock"], ["Rock"]) == ["Jazz", "rock"]
    assert tagging.user_genres(["Jazz", "Rock"], ["Rock"]) == ["Jazz"]
    assert tagging.user_genres(["", "  ", "Jazz"], []) == ["Jazz"]


def test_tagging_module_imports_no_heavy_dependency():
    import subprocess
    import sys

    # The rules run for every item; they must not pull torch or numpy into `beet ls`.
    code = ("import sys; import beetsplug.mmgenre.tagging, mmgenre_core.genre_map; "
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    assert out.stdout.strip() == "[]"
