"""Fit a trained model's calibration temperatures on the validation split.

The temperatures are fitted on what inference really computes: each validation
example goes through :class:`mmgenre_core.predict.GenreClassifier` (the audio decoded
from its file into the inference windows, the lyrics encoded as at inference), one
temperature per kind of input (audio only, lyrics only, both) minimising the negative
log-likelihood of the mean-over-windows probabilities. A kind with no validation
example (the default model has no track with both) gets the geometric mean of the
other two. The expected calibration error (ECE, 10 bins) before and after is measured
on the validation split and, independently of the fit, on the test split.

    python training/calibrate.py --model RUN_DIR/model.pt --run RUN_DIR   # refit an existing run

``train.py`` runs it on the best model at the end of every run.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmgenre_core.calibration import (KINDS, expected_calibration_error, fit_temperature, reliability_bins,
                                      track_probabilities)

log = logging.getLogger(__name__)

#: Tracks per forward pass while collecting logits.
_BATCH = 16


def _kind(path: str | None, lyrics: str | None) -> str:
    return "both" if path and lyrics else ("audio" if path else "lyrics")


def collect_logits(clf, examples: Sequence[Any]) -> dict[str, dict[str, np.ndarray]]:
    """Raw logits of ``examples`` (objects with .path, .lyrics, .genre) by kind of input.

    Returns {kind: {"logits": (rows, n_genres), "track": (rows,), "labels": (tracks,)}};
    examples of a genre the model does not have, and audio that cannot be decoded, are
    left out (logged).
    """
    from mmgenre_core.audio import load_windows
    from mmgenre_core.errors import AudioError
    from mmgenre_core.text import has_words

    index = {g: i for i, g in enumerate(clf.genres)}
    use_audio = clf.checkpoint.model_config.use_audio
    grouped: dict[str, list[tuple[np.ndarray | None, str | None, int]]] = {k: [] for k in KINDS}
    for e in examples:
        if e.genre not in index:
            continue
        lyrics = e.lyrics if e.lyrics and has_words(e.lyrics) and clf.uses_lyrics else None
        path = e.path if use_audio else None
        if not path and not lyrics:
            continue
        windows = None
        if path:
            try:
                windows = load_windows(path, config=clf.audio_config)
            except (AudioError, OSError) as exc:
                log.warning("calibration: skipping %s (%s)", path, exc)
                continue
        grouped[_kind(path, lyrics)].append((windows, lyrics, index[e.genre]))
    out = {}
    for kind, rows in grouped.items():
        if not rows:
            continue
        logits, tracks = [], []
        for start in range(0, len(rows), _BATCH):
            chunk = rows[start:start + _BATCH]
            if kind == "lyrics":  # lyrics alone, as predict_lyrics and audio-less tracks run
                z, _ = clf._lyrics_logits([t for _, t, _ in chunk], False)
                track = torch.arange(len(chunk))
            else:
                features = clf._audio_features([w for w, _, _ in chunk])
                z, track, _, _ = clf._window_logits(features, [t for _, t, _ in chunk], False)
            logits.append(z.cpu().numpy().astype(np.float64))
            tracks.append(track.cpu().numpy() + start)
        out[kind] = {"logits": np.concatenate(logits), "track": np.concatenate(tracks),
                     "labels": np.array([label for _, _, label in rows])}
    return out


def _scores(block: dict[str, np.ndarray], temperature: float) -> dict[str, Any]:
    probs = track_probabilities(block["logits"], block["track"], len(block["labels"]), temperature=temperature)
    return {"n": int(len(block["labels"])), "ece": round(expected_calibration_error(probs, block["labels"]), 4),
            "accuracy": round(float((probs.argmax(1) == block["labels"]).mean()), 4),
            "bins": reliability_bins(probs, block["labels"])}


def calibrate(clf, valid: Sequence[Any], test: Sequence[Any] = ()) -> dict[str, Any]:
    """Fit the temperatures on ``valid``; measure ECE before/after on both splits.

    Returns the checkpoint's ``metadata["calibration"]``: {"temperature": {kind: T},
    "method", "fitted_on", "ece": {split: {kind: {"before", "after", "n", "accuracy"}}},
    "reliability": {split: {kind: {"before": bins, "after": bins}}}}.
    """
    from mmgenre_core.native_stderr import filtered_native_stderr

    with filtered_native_stderr():  # libmpg123's warnings on GTZAN's VBR frames are noise here
        fit_on = collect_logits(clf, valid)
        held_out = collect_logits(clf, test) if test else {}
    temperatures = {k: fit_temperature(b["logits"], b["track"], b["labels"]) for k, b in fit_on.items()}
    fitted = [temperatures[k] for k in ("audio", "lyrics") if k in temperatures]
    for kind in KINDS:  # a kind never seen in validation: the geometric mean of those that were
        if kind not in temperatures:
            temperatures[kind] = round(math.exp(np.mean(np.log(fitted))), 4) if fitted else 1.0
    ece: dict[str, dict] = {}
    reliability: dict[str, dict] = {}
    for split, blocks in (("valid", fit_on), ("test", held_out)):
        for kind, block in blocks.items():
            before, after = _scores(block, 1.0), _scores(block, temperatures[kind])
            ece.setdefault(split, {})[kind] = {"n": before["n"], "before": before["ece"], "after": after["ece"],
                                               "accuracy": after["accuracy"]}
            reliability.setdefault(split, {})[kind] = {"before": before["bins"], "after": after["bins"]}
    return {"method": "temperature scaling per kind of input (audio, lyrics, both)",
            "fitted_on": "validation split", "temperature": temperatures, "ece": ece, "reliability": reliability}


def reliability_png(calibration: dict[str, Any], path: str | Path, *, split: str = "test") -> Path | None:
    """A reliability diagram of ``split`` (one panel per kind): accuracy against
    confidence per bin, before and after calibration, with the ECE in the legend."""
    panels = calibration["reliability"].get(split) or {}
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    for ax, (kind, bins) in zip(axes[0], panels.items()):
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        for label, style in (("before", "o--"), ("after", "s-")):
            pts = bins[label]
            ece = calibration["ece"][split][kind][label]
            t = "" if label == "before" else f", T={calibration['temperature'][kind]:.2f}"
            ax.plot([b["confidence"] for b in pts], [b["accuracy"] for b in pts], style,
                    label=f"{label} (ECE {ece:.3f}{t})")
        n = calibration["ece"][split][kind]["n"]
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence of the top genre", ylabel="accuracy",
               title=f"{kind} ({split} split, {n} tracks)")
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def calibrate_checkpoint(ckpt, data, out_dir: str | Path, device: Any = "cpu") -> dict[str, Any]:
    """Calibrate ``ckpt`` on the validation split of ``data`` (training.build.TrainData),
    measure the test split, write ``out_dir/reliability.png`` and log the ECEs.

    Returns what goes into ``ckpt.metadata["calibration"]``; an earlier calibration of
    the checkpoint is dropped first, so the fit starts from its raw logits.
    """
    from mmgenre_core.predict import GenreClassifier

    split_of = dict(zip(data.table.keys, data.table.splits))
    by_split = {s: [e for e in data.dataset.examples if split_of.get(e.key) == s] for s in ("valid", "test")}
    ckpt.metadata.pop("calibration", None)
    result = calibrate(GenreClassifier(ckpt, device=device, self_test=False), by_split["valid"], by_split["test"])
    reliability_png(result, Path(out_dir) / "reliability.png")
    for split, kinds in result["ece"].items():
        for kind, e in kinds.items():
            log.info("calibration (%s, %s, %d): T=%.3f, ECE %.3f -> %.3f", split, kind, e["n"],
                     result["temperature"][kind], e["before"], e["after"])
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--run", type=Path, required=True, help="the run folder (its config.json gives the splits)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from mmgenre_core.checkpoint import load_checkpoint, save_checkpoint
    from training.config import load_config
    from training.build import load_data

    data = load_data(load_config(args.run / "config.json"), progress=False)  # the run's own splits
    ckpt = load_checkpoint(args.model)
    result = ckpt.metadata["calibration"] = calibrate_checkpoint(ckpt, data, args.run)
    save_checkpoint(args.model, ckpt)
    print({"temperature": result["temperature"], "ece": result["ece"]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
