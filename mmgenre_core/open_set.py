""""I don't know": is a track unlike every genre the model answers?

Two signs, added into one score (``benchmarks/cv_open_set.py`` measures it by leave one
genre out, and the threshold a model ships with comes from that curve):

* **musicnn's own tags.** The MSD model tags a window with 50 labels, trained on far
  more music than the head; among them genres (folk, metal, jazz, ...). The share of
  its genre-tag probability on genres the model does not answer (a tag maps to an FMA
  genre through :data:`TAG_TO_GENRE`) is high for music of those genres.
* **Distance to the training genres.** The squared Mahalanobis distance of the track's
  mean features to the nearest genre mean (one covariance shared by all genres, Ledoit-
  Wolf shrunk), divided by the 95th percentile of the training clips' own distances, so
  1 is the edge of the training data; capped, so that one far-off track cannot outweigh
  the tags.

``score = unknown tag share + DISTANCE_WEIGHT * min(distance, DISTANCE_CAP)``; a track
whose score reaches the threshold is *unfamiliar*: the plugin leaves it untagged and
counts it ("unlike the genres the model knows").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import CheckpointError

#: MSD tag -> FMA top-level genre (FMA's own genres tree, by the tag's name; era, mood and
#: voice tags say nothing of genre). No tag names Classical or International.
TAG_TO_GENRE: dict[str, str] = {
    "rock": "Rock", "alternative rock": "Rock", "classic rock": "Rock", "indie rock": "Rock",
    "hard rock": "Rock", "metal": "Rock", "heavy metal": "Rock", "punk": "Rock", "Progressive rock": "Rock",
    "pop": "Pop", "indie pop": "Pop",
    "electronic": "Electronic", "electronica": "Electronic", "electro": "Electronic", "dance": "Electronic",
    "House": "Electronic",
    "jazz": "Jazz", "blues": "Blues", "country": "Country", "folk": "Folk", "Hip-Hop": "Hip-Hop",
    "soul": "Soul-RnB", "rnb": "Soul-RnB", "funk": "Soul-RnB",
    "experimental": "Experimental", "easy listening": "Easy Listening",
    "instrumental": "Instrumental", "ambient": "Instrumental",
}

DISTANCE_WEIGHT = 0.5
DISTANCE_CAP = 2.0
#: The training clips' distance quantile that the distance is divided by.
DISTANCE_QUANTILE = 0.95


def tag_genre_masks(tag_labels: Sequence[str], genres: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(unknown, known) bool masks [shape=(tags,)]: tags naming a genre outside / inside ``genres``."""
    named = [TAG_TO_GENRE.get(t) for t in tag_labels]
    known = np.array([g is not None and g in genres for g in named])
    unknown = np.array([g is not None and g not in genres for g in named])
    return unknown, known


#: musicnn's own tag layer as (weight [shape=(tags, dim)], bias [shape=(tags,)]), float64.
TagLayer = tuple[np.ndarray, np.ndarray]


def musicnn_tag_layer(backbone: Any) -> TagLayer:
    """The 50-tag output layer of a :class:`mmgenre_core.musicnn.Musicnn`, as numpy."""
    layer = backbone.classifier
    return layer.weight.detach().double().cpu().numpy(), layer.bias.detach().double().cpu().numpy()


def heard_signs(heard: Sequence[np.ndarray], tag_layer: TagLayer) -> tuple[np.ndarray, np.ndarray]:
    """What the score reads of each track from the windows it heard: heard, per track
    [shape=(windows heard, dim)] -> (mean features [shape=(tracks, dim)], mean musicnn tag
    probabilities [shape=(tracks, tags)])."""
    weight, bias = tag_layer
    rows = [np.asarray(r, dtype=np.float64) for r in heard]
    means = np.stack([r.mean(axis=0) for r in rows])
    tags = np.stack([(1.0 / (1.0 + np.exp(-(r @ weight.T + bias)))).mean(axis=0) for r in rows])
    return means, tags


@dataclass(frozen=True)
class OpenSetScore:
    """The fitted score. means [shape=(genres, dim)] of the genres with audio, precision
    [shape=(dim, dim)], scale (the training clips' distance quantile), the tag masks
    [shape=(tags,)] and the threshold."""

    means: np.ndarray
    precision: np.ndarray
    scale: float
    unknown_tags: np.ndarray
    known_tags: np.ndarray
    threshold: float

    def distance(self, features: np.ndarray) -> np.ndarray:
        """features [shape=(tracks, dim)] -> squared distance to the nearest genre mean / scale."""
        diff = features[:, None, :] - self.means[None]  # (tracks, genres, dim)
        d2 = ((diff @ self.precision) * diff).sum(axis=-1)  # a matmul: 25x faster than the einsum
        return d2.min(axis=1) / self.scale

    def tag_share(self, tag_probs: np.ndarray) -> np.ndarray:
        """tag_probs [shape=(tracks, tags)] -> share of genre-tag probability on unknown genres."""
        unknown = tag_probs[:, self.unknown_tags].sum(axis=1)
        known = tag_probs[:, self.known_tags].sum(axis=1)
        return unknown / np.maximum(unknown + known, 1e-9)

    def scores(self, features: np.ndarray, tag_probs: np.ndarray) -> np.ndarray:
        """features [shape=(tracks, dim)], tag_probs [shape=(tracks, tags)] -> [shape=(tracks,)]."""
        return self.tag_share(tag_probs) + DISTANCE_WEIGHT * np.minimum(self.distance(features), DISTANCE_CAP)

    def unfamiliar(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) >= self.threshold

    def with_threshold(self, threshold: float) -> "OpenSetScore":
        return OpenSetScore(self.means, self.precision, self.scale, self.unknown_tags, self.known_tags,
                            float(threshold))

    def to_metadata(self) -> dict[str, Any]:
        """Plain values for a checkpoint's ``metadata["open_set"]`` (weights_only loads them)."""
        return {"means": self.means.astype(np.float64).tolist(), "precision": self.precision.astype(np.float64).tolist(),
                "scale": float(self.scale), "unknown_tags": self.unknown_tags.astype(bool).tolist(),
                "known_tags": self.known_tags.astype(bool).tolist(), "threshold": float(self.threshold),
                "distance_weight": DISTANCE_WEIGHT, "distance_cap": DISTANCE_CAP}

    @classmethod
    def from_metadata(cls, raw: Mapping[str, Any], *, dim: int, tags: int) -> "OpenSetScore":
        """The score a checkpoint carries; :class:`CheckpointError` for a damaged entry."""
        try:
            means = np.asarray(raw["means"], dtype=np.float64)
            precision = np.asarray(raw["precision"], dtype=np.float64)
            unknown = np.asarray(raw["unknown_tags"], dtype=bool)
            known = np.asarray(raw["known_tags"], dtype=bool)
            scale, threshold = float(raw["scale"]), float(raw["threshold"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"unusable open-set entry ({exc})") from exc
        if means.ndim != 2 or means.shape[1] != dim or precision.shape != (dim, dim) \
                or unknown.shape != (tags,) or known.shape != (tags,) or not scale > 0 \
                or not np.isfinite(means).all() or not np.isfinite(precision).all() or not np.isfinite(threshold):
            raise CheckpointError("unusable open-set entry (shapes or values)")
        return cls(means, precision, scale, unknown, known, threshold)


def fit_open_set(features: np.ndarray, labels: np.ndarray, *, genres: Sequence[str], tag_labels: Sequence[str],
                 threshold: float) -> OpenSetScore:
    """Fit the distance part on training clips: features [shape=(clips, dim)] (each clip's
    mean over its windows), labels [shape=(clips,)] indices into ``genres``."""
    from sklearn.covariance import LedoitWolf

    labels = np.asarray(labels)
    present = sorted(set(labels.tolist()))
    means = np.stack([features[labels == c].mean(axis=0) for c in present])
    centred = features - means[np.searchsorted(present, labels)]
    precision = LedoitWolf().fit(centred).precision_
    unknown, known = tag_genre_masks(tag_labels, genres)
    partial = OpenSetScore(means, precision, 1.0, unknown, known, threshold)
    scale = float(np.quantile(partial.distance(features), DISTANCE_QUANTILE))
    return OpenSetScore(means, precision, max(scale, 1e-12), unknown, known, float(threshold))


__all__ = ["DISTANCE_CAP", "DISTANCE_WEIGHT", "OpenSetScore", "TAG_TO_GENRE", "TagLayer", "fit_open_set",
           "heard_signs", "musicnn_tag_layer", "tag_genre_masks"]
