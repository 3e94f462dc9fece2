"""The beets plugin's tagging rules: which genres a track (or album) gets.

Nothing here knows about beets' library, files or torch; the plugin feeds in the model's
probabilities and the item's current genres and gets back a :class:`Decision`.

* :func:`rank_genres` renames the model's genres to the user's vocabulary
  (``genre_map``; several model genres mapped to one name add up their
  probabilities; a name mapped to nothing is dropped) and keeps only the
  ``whitelist``-ed names, best first.
* :func:`select_genres` keeps the top ``count`` whose confidence reaches
  ``min_confidence``.
* :func:`combine_probabilities` is an album's genre distribution: the
  (length-weighted) mean of its tracks' distributions.
* :func:`decide` applies ``force`` / ``keep_existing`` to the current genres.
* :func:`user_genres` is the one notion of "genres this user owns", shared by the
  tagging rules and ``--learn``: every genre of the track except the exact values
  mmgenre wrote earlier (remembered in the item's ``mmgenre_genres`` attribute).
  A rerun replaces mmgenre's own guesses but, without ``force``, never a genre the
  user set, even one that differs from mmgenre's guess only in case: a user who
  turns mmgenre's "Pop" into "pop" has made it theirs.

Model and user genre names compare case-insensitively in ``genre_map`` and
``whitelist`` (``Hip Hop`` == ``hip hop``), and when merging (``keep_existing``
never adds "Rock" beside the user's "rock"); ownership compares exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from mmgenre_core.genre_map import genre_key, map_genre, parse_genre_map, unique_genres  # noqa: F401

#: Why a track or album was left alone (keys of the plugin's run summary).
SKIP_HAS_GENRES = "have genres already (--force replaces, --keep-existing adds)"
SKIP_LOW_CONFIDENCE = "below min_confidence"
SKIP_UNFAMILIAR = "left untagged: unlike the genres the model knows"
SKIP_NOT_ALLOWED = "no whitelisted genre"

TAGGED = "tagged"
UNCHANGED = "unchanged"
SKIPPED = "skipped"


def parse_whitelist(raw: Iterable[str] | str | None) -> frozenset[str]:
    """Normalise the ``whitelist`` option into comparison keys (empty: allow everything).

    A string is read as comma-separated names (``"Rock, Pop"``).
    """
    if raw is None or raw is False:
        return frozenset()
    if isinstance(raw, str):
        raw = raw.split(",")
    return frozenset(genre_key(g) for g in raw if g is not None and str(g).strip())


@dataclass(frozen=True)
class TaggingOptions:
    """What the user configured (see the plugin's README section)."""

    count: int = 1
    min_confidence: float = 0.3
    genre_map: Mapping[str, str | None] = field(default_factory=dict)
    whitelist: frozenset[str] = frozenset()
    force: bool = False
    keep_existing: bool = False
    #: lastgenre's ``fallback``: the genre written when none is confident enough (or allowed).
    fallback: str | None = None
    #: Leave a track the model finds unlike every genre it knows untagged (``unfamiliar: skip``).
    skip_unfamiliar: bool = True

    def __post_init__(self) -> None:
        if int(self.count) < 1:
            raise ValueError("count must be at least 1")
        if not 0.0 <= float(self.min_confidence) <= 1.0:
            raise ValueError("min_confidence must be between 0 and 1")
        object.__setattr__(self, "count", int(self.count))
        object.__setattr__(self, "min_confidence", float(self.min_confidence))
        # Accept raw user values too: normalise the map keys and the whitelist.
        object.__setattr__(self, "genre_map", parse_genre_map(self.genre_map))
        if not isinstance(self.whitelist, frozenset):
            object.__setattr__(self, "whitelist", parse_whitelist(self.whitelist))
        else:
            object.__setattr__(self, "whitelist", frozenset(genre_key(g) for g in self.whitelist))

    @property
    def replaces_user_genres(self) -> bool:
        return self.force or self.keep_existing


def rank_genres(probabilities: Mapping[str, float], options: TaggingOptions) -> list[tuple[str, float]]:
    """Model probabilities -> [(user genre, confidence)], best first.

    Model genres mapped to the same name add up (they are disjoint outcomes of one
    softmax); dropped and non-whitelisted names disappear. Ties keep model order.
    """
    totals: dict[str, float] = {}
    names: dict[str, str] = {}
    for genre, prob in probabilities.items():
        name = map_genre(genre, options.genre_map)
        if name is None:
            continue
        key = genre_key(name)
        if options.whitelist and key not in options.whitelist:
            continue
        names.setdefault(key, name)
        totals[key] = totals.get(key, 0.0) + float(prob)
    # sorted() is stable: equal confidences keep the model's order.
    return [(names[key], total) for key, total in sorted(totals.items(), key=lambda kv: -kv[1])]


def select_genres(ranked: Sequence[tuple[str, float]], options: TaggingOptions) -> list[tuple[str, float]]:
    """The top ``count`` of ``ranked`` whose confidence reaches ``min_confidence``."""
    # A tiny tolerance so that a threshold equal to a float32 probability still passes.
    return [(g, c) for g, c in ranked if c + 1e-9 >= options.min_confidence][: options.count]


def combine_probabilities(distributions: Sequence[Mapping[str, float]],
                          weights: Sequence[float] | None = None) -> dict[str, float]:
    """The weighted mean of several genre distributions (an album from its tracks).

    Weights (e.g. track lengths) that are missing, zero or negative count as 1 when
    all are unusable; a genre absent from a distribution counts as 0 there.
    """
    if not distributions:
        return {}
    if weights is None or len(weights) != len(distributions) or not any((w or 0) > 0 for w in weights):
        weights = [1.0] * len(distributions)
    else:
        weights = [float(w) if w and w > 0 else 0.0 for w in weights]
    total = sum(weights)
    out: dict[str, float] = {}
    for dist, w in zip(distributions, weights):
        for genre, p in dist.items():
            out[genre] = out.get(genre, 0.0) + w * float(p)
    return {g: p / total for g, p in out.items()}


def user_genres(current: Sequence[str], previously_added: Sequence[str]) -> list[str]:
    """The genres in ``current`` that the user owns, verbatim and in order.

    Everything but the exact values mmgenre wrote (``previously_added``): the
    comparison is not case-folded, because a user who edits mmgenre's "Pop" into
    "pop" has confirmed (and now owns) that genre.
    """
    ours = set(previously_added or ())
    return [g for g in current or () if g and str(g).strip() and g not in ours]


def has_user_genres(current: Sequence[str], previously_added: Sequence[str]) -> bool:
    return bool(user_genres(current, previously_added))


def skip_reason(current: Sequence[str], previously_added: Sequence[str], options: TaggingOptions) -> str | None:
    """Why a track need not even be classified (None: classify it)."""
    if not options.replaces_user_genres and has_user_genres(current, previously_added):
        return SKIP_HAS_GENRES
    return None


@dataclass(frozen=True)
class Decision:
    """What to do with one track or album.

    ``touch`` False means leave the object exactly as it is (not even the
    ``mmgenre_*`` attributes); otherwise set ``genres`` and remember ``added`` (the
    genres mmgenre contributed) in ``mmgenre_genres``.
    """

    status: str  # TAGGED, UNCHANGED or SKIPPED
    genres: list[str]
    added: list[str]
    reason: str | None = None
    touch: bool = True
    top: tuple[str, float] | None = None  # best allowed genre and its confidence, even below threshold


def decide(current: Sequence[str], previously_added: Sequence[str], ranked: Sequence[tuple[str, float]],
           options: TaggingOptions, *, unfamiliar: bool = False) -> Decision:
    """The new genres of an object from its current ones and the ranked predictions.

    * No ``force`` nor ``keep_existing`` and user genres present: skipped, untouched.
    * ``keep_existing``: the user's genres first, then the new ones not already there.
    * ``force``: the new genres replace the old ones.
    * Nothing confident enough (or allowed), or ``unfamiliar`` (the model's open-set score
      says the track is unlike every genre it knows) with ``skip_unfamiliar``: the
      ``fallback`` genre when one is set, else skipped, untouched. A run that reports a
      track as skipped leaves it exactly as it was (genres, its earlier mmgenre guess
      and the ``mmgenre_*`` fields that describe it stay in step).
    * The same genres as now: unchanged, and untouched too (the ``mmgenre_*`` fields
      keep describing the run that wrote them; a user's genre that mmgenre would
      also pick stays the user's).
    """
    current = list(current or [])
    top = tuple(ranked[0]) if ranked else None
    if skip_reason(current, previously_added, options):
        return Decision(SKIPPED, current, list(previously_added or ()), SKIP_HAS_GENRES, touch=False, top=top)
    mine = user_genres(current, previously_added)
    unfamiliar = unfamiliar and options.skip_unfamiliar
    chosen = [] if unfamiliar else [g for g, _ in select_genres(ranked, options)]
    if not chosen and options.fallback:
        chosen = [options.fallback]
    if not chosen:
        reason = SKIP_UNFAMILIAR if unfamiliar else SKIP_LOW_CONFIDENCE if ranked else SKIP_NOT_ALLOWED
        return Decision(SKIPPED, current, list(previously_added or ()), reason, touch=False, top=top)
    base = mine if options.keep_existing else []
    # Merging compares case-insensitively: no "Rock" beside the user's "rock".
    base_keys = {genre_key(g) for g in base}
    added = [g for g in unique_genres(chosen) if genre_key(g) not in base_keys]
    new = [*base, *added]
    if new == current:
        return Decision(UNCHANGED, current, list(previously_added or ()), None, touch=False, top=top)
    return Decision(TAGGED, new, added, None, touch=True, top=top)


__all__ = [
    "Decision", "TaggingOptions", "combine_probabilities", "decide", "genre_key", "has_user_genres",
    "map_genre", "parse_genre_map", "parse_whitelist", "rank_genres", "select_genres", "skip_reason",
    "unique_genres", "user_genres", "SKIP_HAS_GENRES", "SKIP_LOW_CONFIDENCE", "SKIP_NOT_ALLOWED", "SKIP_UNFAMILIAR",
    "TAGGED", "UNCHANGED", "SKIPPED",
]
