"""The linear probe before fine-tuning (training/probe.py) and per-modality class weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmgenre_core.config import AudioConfig, ModelConfig
from mmgenre_core.model import GenreModel
from training.config import load_config
from training.loader import Table
from training.probe import Block, fit_head, head_inputs, train_rows
from training.train import example_weights, weighted_cross_entropy

MUSICNN_AUDIO = AudioConfig(sample_rate=16000, n_fft=512, hop_length=256, n_mels=96, top_db=None,
                            scale="musicnn", window_seconds=3.0)


def _table(labels, splits, mel_row, lyr_row, genres=("A", "B", "C")) -> Table:
    n = len(labels)
    return Table(genres=list(genres), keys=[str(i) for i in range(n)], labels=np.asarray(labels),
                 splits=np.asarray(splits, dtype=object), mel_row=np.asarray(mel_row),
                 lyr_row=np.asarray(lyr_row))


def test_fit_head_is_sklearns_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.8, size=120) > 0).astype(int) + (x[:, 2] > 1)
    C = 0.5
    ref = LogisticRegression(C=C, max_iter=10000, tol=1e-10).fit(x, y)
    # sklearn minimises C * sum(CE) + ||W||^2 / 2, i.e. mean(CE) + ||W||^2 / (2 C n).
    blocks = [Block("a", 0, 4, True), Block("b", 4, 6, True)]
    weight, bias = fit_head(torch.from_numpy(x), torch.from_numpy(y), torch.ones(120), blocks=blocks,
                            l2=[1 / (C * 120)] * 2, n_classes=3, max_iter=2000)
    ours = torch.softmax(torch.from_numpy(x) @ weight.T + bias, dim=-1).numpy()
    assert np.abs(ours - ref.predict_proba(x)).max() < 1e-3


def test_fit_head_penalises_each_block_with_its_own_l2():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=(200, 4)).astype(np.float32))
    y = ((x[:, 0] + x[:, 2]) > 0).long()
    blocks = [Block("a", 0, 2, True), Block("b", 2, 4, True)]
    weight, _ = fit_head(x, y, torch.ones(200), blocks=blocks, l2=[1e-4, 10.0], n_classes=2)
    # The heavily penalised block is shrunk towards zero; the light one is not.
    assert weight[:, 2:].abs().max() < 0.1 < weight[:, :2].abs().max()


def test_weighted_cross_entropy_matches_class_weights():
    logits, y = torch.randn(8, 3), torch.tensor([0, 1, 2, 0, 1, 2, 0, 0])
    cw = torch.tensor([0.5, 2.0, 1.5])
    expected = torch.nn.functional.cross_entropy(logits, y, weight=cw)
    assert torch.allclose(weighted_cross_entropy(logits, y, cw[y]), expected)
    assert torch.allclose(weighted_cross_entropy(logits, y, None), torch.nn.functional.cross_entropy(logits, y))


@pytest.mark.parametrize(
    "mode, expected",
    [
        pytest.param("none", None, id="none"),
        # Over the union: 4 A, 1 B, 1 C among 6 training examples (k = 3 genres seen).
        pytest.param("balanced", [0.5, 0.5, 0.5, 2.0, 0.5, 2.0, 0.5], id="balanced"),
        # Audio group: A x3, B x1 -> 4/(2*3), 4/(2*1); lyrics group: A x1, C x1 -> 1 each.
        pytest.param("balanced_per_modality", [2 / 3, 2 / 3, 2 / 3, 2.0, 1.0, 1.0, 2 / 3],
                     id="balanced_per_modality"),
    ],
)
def test_example_weights(tmp_path, mode, expected):
    # Four clips (A, A, A, B), two lyrics (A, C) in train; one validation clip of A.
    table = _table(labels=[0, 0, 0, 1, 0, 2, 0], splits=["train"] * 6 + ["valid"],
                   mel_row=[0, 1, 2, 3, -1, -1, 4], lyr_row=[-1, -1, -1, -1, 0, 1, -1])
    path = tmp_path / "c.json"
    path.write_text('{"data": {"lyrics": [{"type": "jsonl", "path": "x.jsonl"}]}}')
    cfg = load_config(path, [f"train.class_weights={mode}"])
    got = example_weights(cfg, table)
    if expected is None:
        assert got is None
    else:
        assert np.allclose(got, expected)


@pytest.mark.parametrize("power", [0.0, 0.5, 1.0])
def test_class_weight_power_raises_the_balanced_weights(tmp_path, power):
    table = _table(labels=[0, 0, 0, 1, 0, 2, 0], splits=["train"] * 6 + ["valid"],
                   mel_row=[0, 1, 2, 3, -1, -1, 4], lyr_row=[-1, -1, -1, -1, 0, 1, -1])
    path = tmp_path / "c.json"
    path.write_text('{"data": {"lyrics": [{"type": "jsonl", "path": "x.jsonl"}]}}')
    cfg = load_config(path, ["train.class_weights=balanced_per_modality", f"train.class_weight_power={power}"])
    full = np.array([2 / 3, 2 / 3, 2 / 3, 2.0, 1.0, 1.0, 2 / 3])
    assert np.allclose(example_weights(cfg, table), full ** power)


def test_unknown_class_weights_are_refused(tmp_path):
    from mmgenre_core.errors import ConfigError

    path = tmp_path / "c.json"
    path.write_text('{"data": {"lyrics": [{"type": "jsonl", "path": "x.jsonl"}]}}')
    with pytest.raises(ConfigError, match="balanced_per_modality"):
        load_config(path, ["train.class_weights=per_genre"])
    with pytest.raises(ConfigError, match="probe_l2"):
        load_config(path, ["train.probe_l2=[]"])
    for bad in ("2", "-0.5", "true"):
        with pytest.raises(ConfigError, match="class_weight_power"):
            load_config(path, [f"train.class_weight_power={bad}"])
        with pytest.raises(ConfigError, match="lyrics_class_weight_power"):
            load_config(path, [f"train.lyrics_class_weight_power={bad}"])


@pytest.mark.parametrize("overrides, expected", [
    pytest.param(["train.class_weight_power=0.5"], 0.5, id="inherits-class-weight-power"),
    pytest.param(["train.class_weight_power=0.5", "train.lyrics_class_weight_power=0"], 0.0, id="own-power"),
    pytest.param(["train.lyrics_class_weight_power=1", "train.class_weight_power=0"], 1.0, id="own-power-above"),
])
def test_lyrics_head_class_weight_power(tmp_path, overrides, expected):
    path = tmp_path / "c.json"
    path.write_text('{"data": {"lyrics": [{"type": "jsonl", "path": "x.jsonl"}]}}')
    assert load_config(path, overrides).train.lyrics_weight_power == expected


@pytest.mark.parametrize(
    "branch, bow, expected",
    [
        pytest.param("paper", False, [("audio", False), ("han", False)], id="paper-cnn-is-random"),
        pytest.param("musicnn", True, [("audio", True), ("han", False), ("bag", True)], id="musicnn-and-bag"),
    ],
)
def test_head_blocks(branch, bow, expected):
    common = dict(n_genres=3, vocab_size=40, embed_dim=8, word_hidden=4, line_hidden=4, attention_dim=8,
                  lyrics_bow=bow)
    if branch == "musicnn":
        model = GenreModel(ModelConfig(**common, n_mels=96, audio_branch="musicnn", musicnn_features="penultimate"),
                           MUSICNN_AUDIO)
    else:
        model = GenreModel(ModelConfig(**common, n_mels=32, cnn_channels=(4, 8), audio_dim=16),
                           AudioConfig(n_mels=32))
    blocks = model.head_blocks()
    assert [(b.name, b.probed) for b in blocks] == expected
    assert blocks[0].start == 0 and blocks[-1].stop == model.classifier.in_features
    assert all(a.stop == b.start for a, b in zip(blocks, blocks[1:]))


def test_train_rows_spread_crops_over_clips_and_give_lyrics_one_row():
    table = _table(labels=[0, 1, 2], splits=["train"] * 3, mel_row=[0, 1, -1], lyr_row=[-1, 0, 1])
    table.mels = np.zeros((2, 4, 100), dtype=np.float16)
    specs, rows = train_rows(table, np.arange(3), crop_frames=25, max_crops=4, batch_size=5)
    offsets = np.concatenate([s.offsets for s in specs])
    assert rows.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2]
    assert offsets[:4].tolist() == [0, 25, 50, 75]  # first to last possible crop, evenly
    assert sum(len(s.index) for s in specs) == 9 and max(len(s.index) for s in specs) <= 5


def test_head_inputs_are_what_the_classifier_sees():
    model = GenreModel(ModelConfig(n_genres=3, vocab_size=40, embed_dim=8, word_hidden=4, line_hidden=4,
                                   attention_dim=8, n_mels=96, audio_branch="musicnn",
                                   musicnn_features="logits", lyrics_bow=True), MUSICNN_AUDIO).eval()
    rng = np.random.default_rng(0)
    table = _table(labels=[0, 1], splits=["train"] * 2, mel_row=[0, -1], lyr_row=[-1, 0])
    table.mels = rng.random((1, 96, 187)).astype(np.float16) * 3
    table.lyrics_ids = rng.integers(2, 40, size=(1, 4, 5)).astype(np.int32)
    specs, _ = train_rows(table, np.arange(2), crop_frames=None, max_crops=1, batch_size=2)
    x = head_inputs(model, table, specs, crop_frames=None, device=torch.device("cpu"))
    assert not model.training  # left as it was
    with torch.no_grad():
        audio = model.encode_audio(torch.from_numpy(table.mels[:1].astype(np.float32)))
        ids = torch.from_numpy(table.lyrics_ids.astype(np.int64))
        lyrics = model.encode_lyrics(ids, ids != 0, torch.tensor([True])).vector
    assert torch.allclose(x[0], torch.cat([audio[0], model.absent_lyrics(1)[0]]), atol=1e-5)
    assert torch.allclose(x[1], torch.cat([model.absent_audio(1)[0], lyrics[0]]), atol=1e-5)
    assert torch.allclose(model.classifier(x), model.classify(x[:, :50], x[:, 50:]), atol=1e-5)


def test_param_groups_take_the_longest_matching_prefix():
    from training.build import param_groups

    model = GenreModel(ModelConfig(n_genres=3, vocab_size=40, embed_dim=8, word_hidden=4, line_hidden=4,
                                   attention_dim=8, n_mels=96, audio_branch="musicnn", musicnn_finetune=True),
                       MUSICNN_AUDIO)
    groups = param_groups(model, {"cnn": 0.5, "cnn.backbone.classifier": 0.0, "classifier": 0.1, "han.word": 2.0})
    by_scale = {g["lr_scale"]: {id(p) for p in g["params"]} for g in groups}
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[i] for i in by_scale[0.0]} == {"cnn.backbone.classifier.weight", "cnn.backbone.classifier.bias"}
    assert {names[i] for i in by_scale[0.1]} == {"classifier.weight", "classifier.bias"}
    assert all(names[i].startswith("cnn.backbone.") for i in by_scale[0.5])
    assert 2.0 not in by_scale  # prefixes are whole dotted names: "han.word" is not "han.word_gru"
    assert all(not names[i].startswith(("cnn", "classifier")) for i in by_scale[1.0])
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in model.parameters())


def test_fit_head_on_a_sparse_bag_is_the_dense_fit():
    """A sparse COO x (frozen_heads.sparse_bags: a large bag of words) fits the same head."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand((300, 400), generator=g) * (torch.rand((300, 400), generator=g) < 0.02)
    x[7] = 0  # a song without a known word: only the bias answers it
    y = torch.randint(0, 3, (300,), generator=g)
    w = torch.rand(300, generator=g) + 0.5
    block = [Block("bag", 0, 400, True)]
    dense = fit_head(x, y, w, blocks=block, l2=[1e-3], n_classes=3)
    sparse = fit_head(x.to_sparse(), y, w, blocks=block, l2=[1e-3], n_classes=3)
    assert torch.allclose(dense[0], sparse[0], atol=1e-4) and torch.allclose(dense[1], sparse[1], atol=1e-4)


def test_lyrics_head_learns_domain_offsets_and_drops_their_columns():
    """fit_lyrics_head with domains: one 0/1 column per domain in the fit, dropped from the
    returned weight; a domain whose songs lean to genre 2 gets an offset toward it, and the
    plain songs' bias no longer leans there."""
    from training.frozen_heads import fit_lyrics_head, with_domain_columns

    rng = np.random.default_rng(0)
    n, width = 600, 30
    y = rng.integers(0, 3, n)
    x = rng.random((n, width)) * 0.3
    x[np.arange(n), y] += 1.0  # column k says genre k
    domains = np.array([None] * n, dtype=object)
    excerpt = rng.random(n) < 0.5
    domains[excerpt] = "src:excerpt"
    y[excerpt & (rng.random(n) < 0.6)] = 2  # the excerpts lean to genre 2 whatever their words say
    xt = torch.from_numpy(x).float()
    marked = with_domain_columns(xt.to_sparse(), domains, ["src:excerpt"]).to_dense()
    assert marked.shape == (n, width + 1) and torch.equal(marked[:, width], torch.from_numpy(excerpt).float())
    groups = np.arange(n) % 40
    kwargs = dict(n_classes=3, l2_grid=[1e-3], power=0.0, folds=3, seed=0, max_iter=200)
    plain = fit_lyrics_head(xt.to_sparse(), y, groups, **kwargs)
    head = fit_lyrics_head(xt.to_sparse(), y, groups, domains=domains, **kwargs)
    assert plain["domains"] == {} and set(head["domains"]) == {"src:excerpt"}
    assert head["weight"].shape == plain["weight"].shape == (3, width)
    offset = head["domains"]["src:excerpt"]
    assert offset[2] > offset[0] + 0.5 and offset[2] > offset[1] + 0.5
    lean = lambda b: float(b[2] - b[:2].mean())  # noqa: E731
    assert lean(head["bias"]) < lean(plain["bias"]) - 0.3
