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
