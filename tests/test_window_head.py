"""training/window_head.py: the head fitted on what listening in rounds feeds it, and the plans."""

from __future__ import annotations

import numpy as np
import pytest

from mmgenre_core.listening import ListeningPlan
from training.window_head import choose_plans, class_weights, fit_window_head, listen, plan_table

COUNTS = [2, 5, 12]


def test_listen_stops_each_clip_at_the_first_round_it_is_sure_after():
    # 3 clips x 3 rounds x 2 genres: sure at once, sure after round 2, never sure.
    probs = np.array([[[0.9, 0.1], [0.9, 0.1], [0.9, 0.1]],
                      [[0.6, 0.4], [0.2, 0.8], [0.3, 0.7]],
                      [[0.5, 0.5], [0.55, 0.45], [0.4, 0.6]]])
    chosen, heard = listen(probs, ListeningPlan(12, 0.7), counts=COUNTS)
    assert heard.tolist() == [2, 5, 12]
    assert np.allclose(chosen, [[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]])
    _, heard = listen(probs, ListeningPlan(5, 0.7), counts=COUNTS)
    assert heard.tolist() == [2, 5, 5]
    _, heard = listen(probs, ListeningPlan(2, 0.0), counts=COUNTS)
    assert heard.tolist() == [2, 2, 2]
    _, heard = listen(probs, ListeningPlan(12, 1.0), counts=COUNTS)
    assert heard.tolist() == [12, 12, 12]


def test_choose_plans_within_the_budget():
    table = [{"max_windows": 2, "threshold": 0.0, "accuracy": 0.70, "windows": 2.0},
             {"max_windows": 5, "threshold": 0.5, "accuracy": 0.75, "windows": 2.8},
             {"max_windows": 5, "threshold": 0.6, "accuracy": 0.76, "windows": 3.3},
             {"max_windows": 12, "threshold": 0.6, "accuracy": 0.78, "windows": 6.0},
             {"max_windows": 12, "threshold": 0.9, "accuracy": 0.78, "windows": 10.0}]
    plans = choose_plans(table, fast_windows=2, budget_windows=3.0)
    assert plans["fast"] == ListeningPlan(2, 0.0)
    assert plans["balanced"] == ListeningPlan(5, 0.5)
    assert plans["thorough"] == ListeningPlan(12, 0.6)  # as accurate as 0.9, fewer windows


def test_class_weights_square_root():
    w = class_weights(np.array([0, 0, 0, 1]), 3, power=0.5)
    assert np.allclose(w, [np.sqrt(4 / 6)] * 3 + [np.sqrt(2.0)])


def test_the_window_head_learns_separable_genres_and_calibrates():
    rng = np.random.default_rng(0)
    clips, windows, dim = 120, 12, 6
    labels = np.arange(clips) % 3
    centres = rng.normal(size=(3, dim)) * 0.6  # overlapping at 2 windows, apart at 12
    feats = (centres[labels][:, None, :] + rng.normal(size=(clips, windows, dim))).astype(np.float32)
    feats[0, 1:] = np.nan  # a clip too short for more than one window
    groups = [f"artist{i // 4}" for i in range(clips)]
    order = [3, 8, 1, 5, 10, 0, 2, 4, 6, 7, 9, 11]
    head, oof = fit_window_head(feats, labels, groups, order=order, counts=COUNTS, n_classes=3,
                                l2_grid=(0.01, 1.0), inner_folds=3)
    assert head.l2 in (0.01, 1.0) and 0.05 < head.temperature < 20
    assert oof["logits"].shape == (clips, 3, 3)
    z = oof["logits"] / head.temperature
    probs = np.exp(z - z.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    table = plan_table(probs, labels, counts=COUNTS)
    # More windows, fewer mistakes: every clip's mean over 12 windows is cleaner than over 2.
    acc = {(r["max_windows"], r["threshold"]): r["accuracy"] for r in table}
    assert acc[(12, 1.0)] > acc[(2, 0.0)] and acc[(12, 1.0)] > 0.8
    fitted = head.probabilities(np.nanmean(feats, axis=1)[1:]).argmax(1)
    assert (fitted == labels[1:]).mean() > 0.8


@pytest.mark.parametrize("bad", [0, -1])
def test_a_plan_needs_a_window(bad):
    from mmgenre_core.errors import ConfigError

    with pytest.raises(ConfigError):
        ListeningPlan(bad, 0.5)


def test_choose_l2_scores_only_the_scored_examples():
    """With ``scored``, the L2 is chosen (and the temperature fitted) on those examples alone:
    here a larger L2 is right on the scored half and wrong on the rest."""
    from training.window_head import choose_l2

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    groups = [str(i % 25) for i in range(200)]
    scored = np.arange(200) < 100

    def fit_predict(train, test, l2):
        right = np.eye(3)[labels[test]] * 3.0
        wrong = np.eye(3)[(labels[test] + 1) % 3] * 3.0
        good = scored[test] == (l2 > 0.5)  # l2 1.0 answers the scored songs right, 0.1 the others
        return np.where(good[:, None], right, wrong)

    best_all, _, _, errors_all = choose_l2(labels, groups, l2_grid=[0.1, 1.0], folds=4, seed=0, fit_predict=fit_predict)
    best, temperature, oof, errors = choose_l2(labels, groups, l2_grid=[0.1, 1.0], folds=4, seed=0,
                                               fit_predict=fit_predict, scored=scored)
    assert errors_all == {"0.1": 0.5, "1": 0.5} and best_all == 1.0  # a tie goes to the larger penalty
    assert errors == {"0.1": 1.0, "1": 0.0} and best == 1.0 and oof.shape == (200, 3)
    best_rest, *_ = choose_l2(labels, groups, l2_grid=[0.1, 1.0], folds=4, seed=0, fit_predict=fit_predict,
                              scored=~scored)
    assert best_rest == 0.1
    with pytest.raises(ValueError, match="scored"):
        choose_l2(labels, groups, l2_grid=[0.1], folds=4, seed=0, fit_predict=fit_predict,
                  scored=np.zeros(200, dtype=bool))
