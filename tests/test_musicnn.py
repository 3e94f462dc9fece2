"""The PyTorch port of musicnn: parity with the original TensorFlow model on real audio,
its spectrogram, patching, batching, weights loading and the TF -> PyTorch conversion.

The parity fixture (``tests/fixtures/musicnn_reference.npz``) holds the original
model's taggrams, written once by ``training/convert_musicnn.py --reference``; no
TensorFlow is needed here.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import librosa
import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from mmgenre_core.audio import LogMel, load_windows, probe_duration
from mmgenre_core.config import AudioConfig
from mmgenre_core.errors import CheckpointError, ModelNotFoundError
from mmgenre_core.musicnn import (
    DEFAULT_WEIGHTS,
    FEATURE_DIMS,
    MSD_LABELS,
    PATCH_FRAMES,
    WEIGHTS_FORMAT,
    Musicnn,
    load_pretrained,
    save_weights,
    split_patches,
)
from training.convert_musicnn import BATCH_NORMS, CONVS, DENSES, to_state_dict

from .conftest import DEVICES

REFERENCE = Path(__file__).with_name("fixtures") / "musicnn_reference.npz"
with np.load(REFERENCE) as _ref:
    REFERENCE_FILES = [str(f) for f in _ref["files"]]


def musicnn_config(**overrides) -> AudioConfig:
    """musicnn's own spectrogram: 16 kHz, n_fft 512, hop 256, 96 mels, log10(1 + 10000 mel)."""
    return AudioConfig(**{"sample_rate": 16000, "n_fft": 512, "hop_length": 256, "n_mels": 96,
                          "top_db": None, "scale": "musicnn", "min_seconds": 0.5, **overrides})


@pytest.fixture(scope="module")
def pretrained() -> Musicnn:
    return load_pretrained()


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as data:
        return {k: data[k] for k in data.files}


def _top_tags(taggram: np.ndarray, k: int = 5) -> list[str]:
    return [MSD_LABELS[i] for i in np.argsort(-taggram.mean(axis=0), kind="stable")[:k]]


# ---------------------------------------------------------------------------
# 1. Parity with the original TensorFlow musicnn


@pytest.mark.parametrize("index", range(len(REFERENCE_FILES)), ids=REFERENCE_FILES)
def test_taggram_matches_tensorflow_reference(index, data_dir, pretrained, reference, capfd):
    path = data_dir / REFERENCE_FILES[index]
    want = reference[f"taggram_{index}"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the port neither prints nor warns
        cfg = musicnn_config(window_seconds=probe_duration(path))
        wave = load_windows(path, config=cfg)  # the whole file, one window
        x, n = split_patches(LogMel(cfg)(torch.from_numpy(wave)))
        with torch.no_grad():
            got = torch.sigmoid(pretrained(x)["logits"]).numpy()
    assert capfd.readouterr() == ("", "")

    assert wave.shape[0] == 1
    assert n == want.shape[0] and got.shape == want.shape == (n, len(MSD_LABELS))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    # musicnn's top tags: the highest mean over the patches, in order.
    assert _top_tags(got) == _top_tags(want)
    # Per patch, the port's top 5 are the reference's top 5 (up to near ties at 5th place).
    for patch_got, patch_want in zip(got, want):
        fifth = np.sort(patch_want)[-5]
        assert (patch_want[np.argsort(-patch_got)[:5]] >= fifth - 1e-4).all()


# ---------------------------------------------------------------------------
# 2. The spectrogram: musicnn's numpy/librosa formula


def test_logmel_musicnn_equals_librosa_formula(real_clip):
    cfg = musicnn_config(window_seconds=8.0)
    wave = load_windows(real_clip("pop", 3), config=cfg)
    got = LogMel(cfg)(torch.from_numpy(wave)).numpy()[0]  # (96, frames)
    mel = librosa.feature.melspectrogram(y=wave[0], sr=16000, hop_length=256, n_fft=512, n_mels=96)
    want = np.log10(10000 * mel.astype(np.float16).astype(np.float32) + 1)
    assert got.dtype == np.float32 and got.shape == want.shape == (96, 1 + wave.shape[1] // 256)
    assert np.isfinite(got).all() and got.min() >= 0 and got.max() > 1  # real music, not silence
    diff = np.abs(got - want)
    # The float32 STFTs differ in the last bits, so now and then a power rounds to the
    # neighbouring float16 (relative step 2^-10: <= 4.3e-4 after the log).
    assert diff.max() < 1e-3
    assert diff.mean() < 1e-5


# ---------------------------------------------------------------------------
# 3. Patches


@pytest.mark.parametrize(
    "batch, frames, n, width",
    [
        (1, PATCH_FRAMES, 1, PATCH_FRAMES),  # exactly one patch
        (2, 3 * PATCH_FRAMES, 3, PATCH_FRAMES),  # exact multiple
        (2, 2 * PATCH_FRAMES + 100, 2, PATCH_FRAMES),  # the remainder is dropped
        (1, PATCH_FRAMES + 1, 1, PATCH_FRAMES),
        (3, 100, 1, 100),  # shorter than one patch: used whole
        (1, PATCH_FRAMES - 1, 1, PATCH_FRAMES - 1),
    ],
)
def test_split_patches(batch, frames, n, width):
    mel = torch.randn(batch, 96, frames)
    x, got_n = split_patches(mel)
    assert got_n == n
    assert x.shape == (batch * n, width, 96)
    # Patch k of example b is frames [k*width, (k+1)*width) of b, time first.
    for b in range(batch):
        for k in range(n):
            assert torch.equal(x[b * n + k], mel[b, :, k * width : (k + 1) * width].T)


def test_split_patches_custom_length():
    mel = torch.arange(2 * 96 * 10, dtype=torch.float32).reshape(2, 96, 10)
    x, n = split_patches(mel, patch_frames=4)
    assert n == 2 and x.shape == (4, 4, 96)
    assert torch.equal(x[3], mel[1, :, 4:8].T)


# ---------------------------------------------------------------------------
# 4. Batching


@pytest.mark.parametrize("device", DEVICES)
def test_batched_equals_one_by_one(pretrained, device):
    torch.manual_seed(0)
    model = Musicnn().eval()
    model.load_state_dict(pretrained.state_dict())
    model.to(device)
    # Values in the range of musicnn's log10(1 + 10000 mel) spectrograms.
    x = (3 * torch.rand(3, PATCH_FRAMES, 96)).to(device)
    with torch.no_grad():
        batched = model(x)
        singles = [model(x[i : i + 1]) for i in range(len(x))]
        again = model(x)
    assert {k: tuple(v.shape) for k, v in batched.items()} == {
        "logits": (3, len(MSD_LABELS)),
        "penultimate": (3, FEATURE_DIMS["penultimate"]),
        "pool": (3, FEATURE_DIMS["pool"]),
    }
    # Measured: <= 2e-6 apart on CPU and on an H100 (TF32 on, as by default).
    atol = 1e-4 if device == "cpu" else 1e-3
    for key in batched:
        one_by_one = torch.cat([s[key] for s in singles])
        torch.testing.assert_close(batched[key], one_by_one, rtol=1e-4, atol=atol)
        torch.testing.assert_close(batched[key], again[key], rtol=0, atol=0)  # eval: deterministic
    # The patches differ, so do their outputs (a batch is not collapsed into one).
    assert (batched["logits"][0] - batched["logits"][1]).abs().max() > 1e-3


# ---------------------------------------------------------------------------
# 4b. Constant filters left out at inference


def _front_input(pretrained: Musicnn, files: list[str]) -> torch.Tensor:
    """input_bn of real musicnn patches [shape=(patches, 1, 187, 96)]."""
    front = LogMel(musicnn_config())
    with torch.no_grad():
        mel = torch.cat([front(torch.from_numpy(load_windows(f, config=musicnn_config(num_windows=2, window_seconds=3.0))))
                         for f in files])
        patches, _ = split_patches(mel)
        return pretrained.input_bn(patches.unsqueeze(1))


@pytest.mark.parametrize("device", DEVICES)
def test_constant_filters_are_left_out_with_the_same_floats(pretrained, data_dir, device):
    model = Musicnn().eval()
    model.load_state_dict(pretrained.state_dict())
    model.to(device)
    x = _front_input(pretrained, [str(data_dir / f) for f in REFERENCE_FILES[:4]]).to(device)
    bound = model.input_bound()
    assert float(x.abs().max()) < bound
    constant = {i: int(b.constant_filters(bound).sum()) for i, b in enumerate((*model.timbral, *model.temporal))}
    # The MSD model's dead filters (measured: 174 and 187 of 204 timbral, 43, 34, 29 of 51 temporal).
    assert constant[0] >= 150 and constant[1] >= 150 and all(n >= 20 for n in constant.values())
    with torch.no_grad():
        for block in (*model.timbral, *model.temporal):
            pruned, whole = block(x, input_bound=bound), block(x)  # no bound: every filter convolved
            assert block.constant_filters(float("inf")).sum() == 0
            assert pruned.shape == whole.shape
            assert torch.equal(pruned, whole)
        # Through the whole network: the same answer as the graph without the shortcut.
        full = model(x[:, 0])["penultimate"]
        model.input_bound = lambda: float("inf")
        assert torch.equal(full, model(x[:, 0])["penultimate"])


def test_a_filter_with_real_weights_is_never_constant(pretrained, data_dir):
    model = Musicnn().eval()
    model.load_state_dict(pretrained.state_dict())
    block = model.timbral[0]
    bound = model.input_bound()
    dead = int(torch.nonzero(block.constant_filters(bound))[0])
    x = _front_input(pretrained, [str(data_dir / f) for f in REFERENCE_FILES[:2]])
    with torch.no_grad():
        before = block(x, input_bound=bound)[:, dead]
        block.conv.weight[dead] = torch.linspace(-0.2, 0.2, block.conv.weight[dead].numel()).view_as(block.conv.weight[dead])
        assert not block.constant_filters(bound)[dead]
        after, whole = block(x, input_bound=bound), block(x)
    assert torch.equal(after, whole)
    assert (before == before.flatten()[0]).all() and float(after[:, dead].std()) > 1e-3  # it now follows the audio


# ---------------------------------------------------------------------------
# 5. Loading weights: round trip and clear errors


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(1)
    model = Musicnn()
    for m in model.modules():  # non-trivial running statistics too
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    path = save_weights(tmp_path / "w.pt", model, source={"test": "yes"}, licence="ISC")
    loaded = load_pretrained(path)
    assert not loaded.training
    want, got = model.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys()
    for k in want:
        assert torch.equal(want[k], got[k]), k
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == WEIGHTS_FORMAT and payload["source"] == {"test": "yes"}


def _write_empty(path: Path) -> None:
    path.write_bytes(b"")


def _write_random(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(4096))


def _write_no_marker(path: Path) -> None:
    torch.save({"state_dict": Musicnn().state_dict(), "labels": list(MSD_LABELS)}, path)


def _write_wrong_marker(path: Path) -> None:
    torch.save({"format": "mmgenre-checkpoint", "state_dict": Musicnn().state_dict()}, path)


def _write_not_a_dict(path: Path) -> None:
    torch.save([torch.zeros(3)], path)


def _write_wrong_shape(path: Path) -> None:
    state = Musicnn().state_dict()
    state["classifier.weight"] = torch.zeros(10, 200)  # 10 tags instead of 50
    torch.save({"format": WEIGHTS_FORMAT, "state_dict": state}, path)


def _write_missing_key(path: Path) -> None:
    state = Musicnn().state_dict()
    del state["timbral.0.conv.weight"]
    torch.save({"format": WEIGHTS_FORMAT, "state_dict": state}, path)


def _write_no_state_dict(path: Path) -> None:
    torch.save({"format": WEIGHTS_FORMAT, "labels": list(MSD_LABELS)}, path)


class _Foreign:  # not loadable with weights_only=True
    pass


def _write_pickled_object(path: Path) -> None:
    torch.save({"format": WEIGHTS_FORMAT, "thing": _Foreign()}, path)


@pytest.mark.parametrize(
    "write, message",
    [
        (_write_empty, "empty"),
        (_write_random, "not a PyTorch checkpoint"),
        (_write_no_marker, f"no '{WEIGHTS_FORMAT}' marker"),
        (_write_wrong_marker, f"no '{WEIGHTS_FORMAT}' marker"),
        (_write_not_a_dict, f"no '{WEIGHTS_FORMAT}' marker"),
        (_write_wrong_shape, "do not fit the network"),
        (_write_missing_key, "do not fit the network"),
        (_write_no_state_dict, "do not fit the network"),
        (_write_pickled_object, "weights-only"),
    ],
    ids=lambda v: getattr(v, "__name__", "")[len("_write_"):] or None,
)
def test_load_pretrained_errors(tmp_path, write, message):
    path = tmp_path / "weights.pt"
    write(path)
    with pytest.raises(CheckpointError) as info:
        load_pretrained(path)
    assert type(info.value) is CheckpointError
    assert str(path) in str(info.value) and message in str(info.value)


def test_load_pretrained_missing_file(tmp_path):
    path = tmp_path / "nowhere" / "musicnn.pt"
    with pytest.raises(ModelNotFoundError, match="no model file"):
        load_pretrained(path)


# ---------------------------------------------------------------------------
# 6. Conversion from TensorFlow's variables


def _bns(model: Musicnn) -> dict[str, torch.nn.Module]:
    return {scope: model.get_submodule(name) for scope, name in BATCH_NORMS.items()}


def to_tf_vars(model: Musicnn) -> dict[str, np.ndarray]:
    """The inverse of to_state_dict: a model's weights as musicnn's TF variables."""
    out: dict[str, np.ndarray] = {}
    for scope, name in CONVS.items():
        conv = model.get_submodule(name)
        w = conv.weight.detach()
        if w.dim() == 3:  # Conv1d (out, channels, 7): TF's (7, channels, 1, out) kernel
            kernel = w.permute(2, 1, 0).unsqueeze(2)
        else:  # Conv2d (out, in, kh, kw): TF's (kh, kw, in, out)
            kernel = w.permute(2, 3, 1, 0)
        out[f"{scope}/kernel"] = kernel.numpy().copy()
        out[f"{scope}/bias"] = conv.bias.detach().numpy().copy()
    for scope, bn in _bns(model).items():
        out[f"{scope}/gamma"] = bn.weight.detach().numpy().copy()
        out[f"{scope}/beta"] = bn.bias.detach().numpy().copy()
        out[f"{scope}/moving_mean"] = bn.running_mean.numpy().copy()
        out[f"{scope}/moving_variance"] = bn.running_var.numpy().copy()
    for scope, name in DENSES.items():
        dense = model.get_submodule(name)
        out[f"{scope}/kernel"] = dense.weight.detach().T.numpy().copy()  # TF: (in, out)
        out[f"{scope}/bias"] = dense.bias.detach().numpy().copy()
    return out


@pytest.fixture(scope="module")
def random_model() -> Musicnn:
    torch.manual_seed(2)
    model = Musicnn().eval()
    with torch.no_grad():
        for bn in _bns(model).values():
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_()
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
    return model


def test_tables_cover_the_network(random_model):
    modules = {name for name, m in random_model.named_modules()
               if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear,
                                 torch.nn.modules.batchnorm._BatchNorm))}
    mapped = [*CONVS.values(), *BATCH_NORMS.values(), *DENSES.values()]
    assert len(mapped) == len(set(mapped)) and set(mapped) == modules


def test_to_state_dict_inverts_tf_layout(random_model):
    tf_vars = to_tf_vars(random_model)
    # TF's layouts really differ from PyTorch's (a transposition is not a no-op).
    assert tf_vars["conv2d/kernel"].shape == (7, 38, 1, 204)
    assert tf_vars["conv2d_2/kernel"].shape == (128, 1, 1, 51)
    assert tf_vars["conv2d_5/kernel"].shape == (7, 561, 1, 64)
    assert tf_vars["dense/kernel"].shape == (1506, 200)
    state = to_state_dict(tf_vars)
    want = random_model.state_dict()
    assert state.keys() == want.keys()
    for k in want:
        assert state[k].dtype == want[k].dtype and torch.equal(state[k], want[k]), k
    model = Musicnn()
    model.load_state_dict(state, strict=True)
    for k, v in model.state_dict().items():
        assert v.dtype == want[k].dtype and torch.equal(v, want[k]), k


# A TF "valid" layer on a tiny input, computed with numpy from the TF kernel (HWIO,
# cross-correlation, NHWC input) against the port's module loaded via to_state_dict.
@pytest.mark.parametrize(
    "scope, frames, width",
    [
        ("conv2d", 12, 96),  # timbral 7 x 38
        ("conv2d_1", 9, 96),  # timbral 7 x 67
        ("conv2d_3", 70, 96),  # temporal 64 x 1
        ("conv2d_5", 10, 561),  # mid end 7 x 561 (a 1-d conv in the port)
        ("conv2d_6", 8, 64),
    ],
)
def test_conv_layout_against_numpy(random_model, scope, frames, width):
    rng = np.random.default_rng(3)
    tf_vars = to_tf_vars(random_model)
    kh, kw, _, filters = tf_vars[f"{scope}/kernel"].shape
    kernel = rng.standard_normal((kh, kw, 1, filters)).astype(np.float32)
    bias = rng.standard_normal(filters).astype(np.float32)
    tf_vars[f"{scope}/kernel"], tf_vars[f"{scope}/bias"] = kernel, bias
    model = Musicnn()
    model.load_state_dict(to_state_dict(tf_vars))
    conv = model.get_submodule(CONVS[scope])

    image = rng.standard_normal((frames, width)).astype(np.float32)  # one NHWC image, 1 channel
    windows = sliding_window_view(image, (kh, kw))  # (frames-kh+1, width-kw+1, kh, kw)
    want = np.einsum("ijab,abo->ijo", windows.astype(np.float64), kernel[:, :, 0, :]) + bias

    with torch.no_grad():
        if isinstance(conv, torch.nn.Conv1d):  # channels = TF's width axis
            got = conv(torch.from_numpy(image.T)[None])[0].T.unsqueeze(1)  # (t, 1, filters)
        else:
            got = conv(torch.from_numpy(image)[None, None])[0].permute(1, 2, 0)  # (t, bins, filters)
    assert got.shape == want.shape
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("scope", ["dense", "dense_1"])
def test_dense_layout_against_numpy(random_model, scope):
    rng = np.random.default_rng(4)
    tf_vars = to_tf_vars(random_model)
    kernel = rng.standard_normal(tf_vars[f"{scope}/kernel"].shape).astype(np.float32)
    tf_vars[f"{scope}/kernel"] = kernel
    model = Musicnn()
    model.load_state_dict(to_state_dict(tf_vars))
    x = rng.standard_normal((2, kernel.shape[0])).astype(np.float32)
    with torch.no_grad():
        got = model.get_submodule(DENSES[scope])(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, x @ kernel + tf_vars[f"{scope}/bias"], rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------
# 7. The shipped weights and their licence


def test_shipped_weights():
    payload = torch.load(DEFAULT_WEIGHTS, weights_only=True, map_location="cpu")
    assert payload["format"] == WEIGHTS_FORMAT
    assert payload["labels"] == list(MSD_LABELS) and len(MSD_LABELS) == 50
    assert "Universitat Pompeu Fabra" in payload["licence"]
    assert payload["source"]["checkpoint"] == "MSD_musicnn"
    assert payload["state_dict"].keys() == Musicnn().state_dict().keys()
    assert all(v.device.type == "cpu" for v in payload["state_dict"].values())
    licence_file = DEFAULT_WEIGHTS.with_name("LICENSE.musicnn")
    assert licence_file.is_file()
    assert "Universitat Pompeu Fabra" in licence_file.read_text(encoding="utf-8")
    model = load_pretrained()
    assert isinstance(model, Musicnn) and not model.training
