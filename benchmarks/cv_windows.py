"""Listening in rounds against fixed four windows: artist-grouped cross-validation.

On every labelled clip of ``../shared/data`` (Emotify, GTZAN, the FMA sample), with the
folds of ``benchmarks/cv_audio.py`` (same rule; three fold seeds by default), side by
side on the same test clips:

* ``fixed4``: the head recipe over the mean of four windows, one per quarter (0.4.1's
  windows; raw features, square-root class weights, L2 0.1: ``cv_pool.sqrt_weighted_logistic``);
* ``probe``: the plain probe over the same four windows (standardised, balanced LogReg);
* the default config's head that listens in rounds (``training/window_head.py``: fitted
  on means over 2, 5 and 12 windows, L2 and temperature from an inner artist-grouped
  CV of the training fold) under every listening plan: the first two windows only, 5
  or 12 always, or 2 then more while the calibrated top probability is below a
  threshold;
* the named plans (``fast``, ``balanced``, ``thorough``) chosen inside each training
  fold by ``window_head.choose_plans`` on its inner out-of-fold answers, scored on the
  fold's test clips: what shipping that rule is worth on artists it never saw.

    python benchmarks/window_features.py --out F.npz       # ~3 min on the 2-core CPU
    python benchmarks/cv_windows.py --features F.npz [--seeds 0 1 2] [--budget 4.0] [--json J] [--png P]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.cv_lyrics import fold_splits, summarise  # noqa: E402
from benchmarks.cv_pool import logistic, sqrt_weighted_logistic  # noqa: E402

#: Mean windows a track for "balanced": no more than the four fixed windows it replaces,
#: so never slower than them (a window costs the same either way).
DEFAULT_BUDGET = 4.0
L2_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)
MIN_TRAIN_CLIPS = 5


def tag_precision(truth: list[str], written: list[str | None]) -> dict[str, dict]:
    """Per genre: how many tags of it were written, and the share of them that were right."""
    out = {}
    for g in sorted(set(truth) | {w for w in written if w is not None}):
        mine = [t for t, w in zip(truth, written) if w == g]
        out[g] = {"written": len(mine), "precision": (sum(t == g for t in mine) / len(mine)) if mine else float("nan")}
    return out


def macro_f1(truth: list[str], said: list[str]) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(truth, said, labels=sorted(set(truth)), average="macro", zero_division=0))


def default_open_set_threshold() -> float | None:
    config = json.loads((ROOT / "training" / "configs" / "default_model.json").read_text(encoding="utf-8"))
    return config["train"].get("open_set_threshold")


def open_set_flags(score, features: np.ndarray, heard: np.ndarray, order: list[int], tag_layer) -> np.ndarray:
    """Which clips the open-set score flags from the windows each heard (as inference scores
    them): features [shape=(clips, windows, dim)], heard [shape=(clips,)] window counts."""
    from mmgenre_core.listening import heard_rows
    from mmgenre_core.open_set import heard_signs

    rows = [heard_rows(f, order, int(n)) for f, n in zip(features, heard)]
    return score.unfamiliar(score.scores(*heard_signs(rows, tag_layer)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--features", type=Path, required=True, help="benchmarks/window_features.py's output")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fold seeds (each a 5-fold CV)")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET, help="mean windows a track for 'balanced'")
    p.add_argument("--min-confidence", type=float, default=0.3, help="the plugin's default, for tag precision")
    p.add_argument("--open-set-threshold", type=float, default=default_open_set_threshold(),
                   help="the open-set score's threshold (default: the default model's); a flagged clip is not tagged")
    p.add_argument("--json", type=Path)
    p.add_argument("--png", type=Path)
    args = p.parse_args(argv)

    from sklearn.metrics import f1_score, recall_score

    from mmgenre_core.musicnn import load_pretrained
    from mmgenre_core.open_set import musicnn_tag_layer
    from training.frozen_heads import fit_clip_open_set
    from training.window_head import choose_plans, fit_window_head, listen, plan_table

    tag_layer = musicnn_tag_layer(load_pretrained())  # musicnn's own tags, for the open-set score

    data = np.load(args.features)
    nested, parts = data["rounds"], data["fixed4"]
    genres_all, groups = list(data["genres"]), list(data["artists"])
    order, ends = [int(v) for v in data["order"]], [int(v) for v in data["ends"]]
    parts_mean = np.nanmean(parts, axis=1)
    print(f"{len(genres_all)} clips, {len(set(groups))} artists, {args.folds} folds x seeds {args.seeds}; "
          f"{nested.shape[1]} windows heard in the order {order}, rounds end at {ends}", flush=True)

    started = time.perf_counter()
    rows: list[dict] = []
    truth_all: list[str] = []
    predicted: dict[str, list[str]] = defaultdict(list)
    written: dict[str, list[str | None]] = defaultdict(list)  # the tag a library gets (None: left untagged)
    curve: dict[tuple[int, float], list[dict]] = defaultdict(list)
    splits = [(seed, k, split) for seed in args.seeds
              for k, split in enumerate(fold_splits(genres_all, groups, folds=args.folds, seed=seed, valid_parts=7))]
    for seed, k, split in splits:
        fit = [i for i, s in enumerate(split) if s != "test"]
        # As training does (data.min_train_examples): a genre of fewer than 5 training clips is left out.
        enough = {g for g, n in Counter(genres_all[i] for i in fit).items() if n >= MIN_TRAIN_CLIPS}
        fit = np.array([i for i in fit if genres_all[i] in enough])
        test = np.array([i for i, s in enumerate(split) if s == "test"])
        genres = sorted({genres_all[i] for i in fit})
        index = {g: n for n, g in enumerate(genres)}
        y_fit = np.array([index[genres_all[i]] for i in fit])
        y_test = np.array([index.get(genres_all[i], -1) for i in test])
        truth = [genres_all[i] for i in test]
        row: dict = {"seed": seed, "fold": k, "n": len(test)}
        answers = {"fixed4": sqrt_weighted_logistic(parts_mean[fit], [genres_all[i] for i in fit], parts_mean[test]),
                   "probe": logistic(parts_mean[fit], [genres_all[i] for i in fit], parts_mean[test])}
        for m in ("fixed4", "probe"):
            row[m] = float(np.mean(np.array(answers[m]) == np.array(truth)))
            row[f"{m}_macro_f1"] = macro_f1(truth, answers[m])
        head, oof = fit_window_head(nested[fit], y_fit, [groups[i] for i in fit], order=order, counts=ends,
                                    n_classes=len(genres), l2_grid=L2_GRID, seed=seed)
        open_set = (fit_clip_open_set(nested[fit], y_fit, order=order, genres=genres, threshold=args.open_set_threshold)
                    if args.open_set_threshold is not None else None)
        from mmgenre_core.listening import window_count_rows

        test_rows = window_count_rows(nested[test], order, ends)  # (clips, rounds, dim)
        test_probs = np.stack([head.probabilities(test_rows[:, c]) for c in range(len(ends))], axis=1)
        for r in plan_table(test_probs, y_test, counts=ends):
            curve[(r["max_windows"], r["threshold"])].append(r)
        # The named plans, chosen on the training fold's own out-of-fold answers.
        inner_probs = head.calibrated(oof["logits"])
        plans = choose_plans(plan_table(inner_probs, y_fit, counts=ends), fast_windows=ends[0],
                             budget_windows=args.budget)
        for name, plan in plans.items():
            probs, heard = listen(test_probs, plan, counts=ends)
            said = [genres[j] for j in probs.argmax(1)]
            flagged = (open_set_flags(open_set, nested[test], heard, order, tag_layer) if open_set is not None
                       else np.zeros(len(test), dtype=bool))
            written[name] += [g if p >= args.min_confidence and not f else None
                              for g, p, f in zip(said, probs.max(1), flagged)]
            row[f"{name}_unfamiliar"] = float(flagged.mean())
            row[name] = {"accuracy": float((probs.argmax(1) == y_test).mean()), "windows": float(heard.mean()),
                         "macro_f1": macro_f1(truth, said), **plan.to_dict()}
            predicted[name] += said
        predicted["fixed4"] += list(answers["fixed4"])
        predicted["probe"] += list(answers["probe"])
        truth_all += truth
        row["l2"], row["temperature"] = head.l2, head.temperature
        rows.append(row)
        print(f"seed {seed} fold {k}: fixed4 {row['fixed4'] * 100:.1f}%  probe {row['probe'] * 100:.1f}%  " + "  ".join(
            f"{n} {row[n]['accuracy'] * 100:.1f}% @ {row[n]['windows']:.2f} (max {row[n]['max_windows']}, "
            f"< {row[n]['threshold']:g})" for n in plans) + f"  (l2 {head.l2:g}, T {head.temperature:.2f}; "
            f"{len(test)} clips)", flush=True)

    summary: dict = {m: summarise([r[m] for r in rows]) for m in ("fixed4", "probe")}
    for m in ("fixed4", "probe"):
        summary[f"{m}_macro_f1"] = summarise([r[f"{m}_macro_f1"] for r in rows])
    for name in ("fast", "balanced", "thorough"):
        summary[name] = {"accuracy": summarise([r[name]["accuracy"] for r in rows]),
                         "windows": summarise([r[name]["windows"] for r in rows]),
                         "macro_f1": summarise([r[name]["macro_f1"] for r in rows]),
                         "macro_f1_minus_probe": summarise([r[name]["macro_f1"] - r["probe_macro_f1"] for r in rows]),
                         "minus_probe": summarise([r[name]["accuracy"] - r["probe"] for r in rows]),
                         "minus_fixed4": summarise([r[name]["accuracy"] - r["fixed4"] for r in rows])
                         | {"folds_not_below": sum(r[name]["accuracy"] >= r["fixed4"] for r in rows)}}
    table = [{"max_windows": key[0], "threshold": key[1],
              "accuracy": float(np.mean([r["accuracy"] for r in rs])),
              "windows": float(np.mean([r["windows"] for r in rs]))} for key, rs in sorted(curve.items())]
    print(f"\n{len(rows)} folds, {time.perf_counter() - started:.0f} s. Accuracy (mean ± sd over folds):")
    for m, label in (("fixed4", "fixed four windows (head)"), ("probe", "fixed four windows (probe)")):
        print(f"  {label:26s} {summary[m]['mean'] * 100:.1f}% ± {summary[m]['sd'] * 100:.1f}, macro-F1 "
              f"{summary[m + '_macro_f1']['mean']:.3f}")
    for name in ("fast", "balanced", "thorough"):
        s = summary[name]
        print(f"  {name:9s} {s['accuracy']['mean'] * 100:.1f}% ± {s['accuracy']['sd'] * 100:.1f}, macro-F1 "
              f"{s['macro_f1']['mean']:.3f}, at {s['windows']['mean']:.2f} windows a track; minus fixed4 "
              f"{s['minus_fixed4']['mean'] * 100:+.1f} ± {s['minus_fixed4']['sd'] * 100:.1f} (not below on "
              f"{s['minus_fixed4']['folds_not_below']}/{len(rows)} folds); minus probe "
              f"{s['minus_probe']['mean'] * 100:+.1f} points, macro-F1 {s['macro_f1_minus_probe']['mean']:+.3f}")
    counts = Counter(truth_all)
    genres_seen = sorted(counts)
    recall = {m: dict(zip(genres_seen, recall_score(truth_all, predicted[m], labels=genres_seen, average=None,
                                                    zero_division=0).tolist())) for m in predicted}
    f1 = {m: dict(zip(genres_seen, f1_score(truth_all, predicted[m], labels=genres_seen, average=None,
                                            zero_division=0).tolist())) for m in predicted}
    tags = tag_precision(truth_all, written["balanced"])
    print("  recall per genre (pooled over folds and seeds; clips per seed); the balanced plan's F1, and the "
          f"precision of the tags it writes at min_confidence {args.min_confidence:g} (share of clips tagged):")
    for g in genres_seen:
        print(f"    {g:14s} {counts[g] // len(args.seeds):4d}  " + "  ".join(f"{m} {recall[m][g]:.2f}" for m in
                                                                        ("probe", "fixed4", "fast", "balanced", "thorough"))
              + f"  | F1 {f1['balanced'][g]:.2f}  tags {tags[g]['precision']:.2f} of {tags[g]['written']}")
    tagged = sum(w is not None for w in written["balanced"]) / len(truth_all)
    right = sum(w == t for w, t in zip(written["balanced"], truth_all)) / max(1, sum(w is not None for w in written["balanced"]))
    unfamiliar = float(np.mean([r["balanced_unfamiliar"] for r in rows]))
    print(f"  balanced at min_confidence {args.min_confidence:g}, open-set threshold {args.open_set_threshold}: "
          f"{tagged:.1%} of clips tagged, {right:.1%} of those tags right; {unfamiliar:.1%} left untagged as "
          "unlike the genres the model knows")
    print("  every plan (mean over folds): max_windows threshold accuracy windows")
    for t in table:
        print(f"    {t['max_windows']:3d} {t['threshold']:5.2f}  {t['accuracy'] * 100:5.1f}%  {t['windows']:.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"folds": args.folds, "seeds": args.seeds, "budget": args.budget,
                                         "order": order, "counts": ends, "rows": rows, "summary": summary, "curve": table,
                                         "recall": recall, "f1": f1, "tags": tags,
                                         "tagged_share": tagged, "tag_precision": right, "open_set_threshold": args.open_set_threshold,
                                         "unfamiliar_share": unfamiliar, "clips": {g: c // len(args.seeds) for g, c in counts.items()}},
                                        indent=2) + "\n", encoding="utf-8")
    if args.png:
        plot(table, summary, args.png, first=ends[0])
    return 0


def plot(table: list[dict], summary: dict, path: Path, *, first: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for m in sorted({t["max_windows"] for t in table} - {first}):
        pts = sorted((t["windows"], t["accuracy"]) for t in table if t["max_windows"] == m)
        ax.plot([w for w, _ in pts], [a * 100 for _, a in pts], marker=".", label=f"2, then up to {m} while unsure")
    ax.axhline(summary["fixed4"]["mean"] * 100, color="grey", ls="--", label="fixed four windows, one per quarter (head recipe)")
    for name, marker in (("fast", "v"), ("balanced", "o"), ("thorough", "^")):
        s = summary[name]
        ax.scatter([s["windows"]["mean"]], [s["accuracy"]["mean"] * 100], marker=marker, s=60, zorder=3,
                   label=f"{name} (chosen inside each fold)")
    ax.set_xlabel("windows heard per track (mean)")
    ax.set_ylabel("accuracy, artist-grouped 5-fold CV (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
