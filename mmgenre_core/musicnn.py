"""A PyTorch port of musicnn (Pons and Serra, 2019), the MSD-trained audio tagger.

musicnn 0.1.0 (ISC licence, Music Technology Group, Universitat Pompeu Fabra) ships
TensorFlow 1 checkpoints; ``training/convert_musicnn.py`` turns the ``MSD_musicnn`` one
into a state_dict for :class:`Musicnn` (``mmgenre_core/models/musicnn_msd.pt``, with the
licence in ``mmgenre_core/models/LICENSE.musicnn``). No TensorFlow is needed at run time.

Layer by layer the same network as ``musicnn/models.py::build_musicnn``:

* front end: batch norm of the input, two "timbral" convolutions (7 frames x 38 and
  x 67 mel bands, 204 filters each) and three "temporal" ones (128, 64, 32 frames x 1
  band, 51 filters each), every one conv -> ReLU -> batch norm -> max over frequency;
* mid end: three 7-frame convolutions (64 filters) with dense/residual connections;
* back end: max and mean over time, batch norm, dense 200 (the "penultimate" layer),
  dense to the 50 MSD tags.

Input is musicnn's own spectrogram: 16 kHz, ``n_fft=512``, ``hop=256``, 96 Slaney mel
bands, ``log10(1 + 10000 * mel)`` (see :class:`mmgenre_core.audio.LogMel` with
``scale="musicnn"``), cut into 3-s patches of 187 frames.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: The 50 tags of the MSD model, in the order of its outputs (musicnn/configuration.py).
MSD_LABELS: tuple[str, ...] = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
    "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock",
    "soul", "indie rock", "Mellow", "electronica", "80s", "folk", "90s", "chill", "instrumental",
    "punk", "oldies", "blues", "hard rock", "ambient", "acoustic", "experimental", "female vocalist",
    "guitar", "Hip-Hop", "70s", "party", "country", "easy listening", "sexy", "catchy", "funk",
    "electro", "heavy metal", "Progressive rock", "60s", "rnb", "indie pop", "sad", "House", "happy",
)

#: Frames of one 3-s patch, as musicnn computes them:
#: ``librosa.time_to_frames(3, sr=16000, n_fft=512, hop_length=256) + 1``.
PATCH_FRAMES = 187
N_MELS = 96
SAMPLE_RATE = 16000
N_FFT = 512
HOP_LENGTH = 256

#: Width of each feature the backbone can hand to the fusion head.
FEATURE_DIMS = {"penultimate": 200, "taggram": 50, "pool": 2 * 753}

#: Above ``log10(1 + 10000 * mel)`` for every finite float32 ``mel`` (log10(1e4 * 3.4e38) = 42.53).
LOG_MEL_CEILING = 42.6

# TensorFlow's batch-norm epsilon (tf.compat.v1.layers.batch_normalization default).
_TF_BN_EPS = 1e-3


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_TF_BN_EPS)


class _PoolOverFrequency(nn.Module):
    """conv -> ReLU -> batch norm -> max over all frequency bins.

    [shape=(batch, 1, frames, mels)] -> [shape=(batch, filters, frames)].
    ``time_pad`` is the (before, after) zero padding of the time axis that makes the
    output as long as the input (TensorFlow's "same" padding for the temporal blocks).
    """

    def __init__(self, filters: int, kernel: tuple[int, int], time_pad: tuple[int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, filters, kernel_size=kernel)
        self.bn = _bn(filters)
        self.time_pad = time_pad

    def forward(self, x: torch.Tensor, *, input_bound: float = math.inf) -> torch.Tensor:
        """``input_bound``: a bound on ``|x|`` (inference leaves out the filters whose output
        it proves constant, see :meth:`constant_filters`)."""
        x = F.pad(x, (0, 0, *self.time_pad))  # pads (mels: none, frames: before/after)
        if torch.is_grad_enabled() or self.bn.training:
            x = self.bn(torch.relu(self.conv(x)))  # (batch, filters, frames, bins)
            return x.amax(dim=-1)
        return self._max_first(x, input_bound=input_bound)

    def constant_filters(self, input_bound: float) -> torch.Tensor:
        """Which filters give the same output whatever the input (|x| <= ``input_bound``).

        Most of the MSD model's front-end filters died in training: their weights are
        1e-30 to 1e-9 (timbral: 180 and 190 of 204 below 1e-6), so ``z = w . x + b``
        is ``b`` plus at most ``||w||_1 * input_bound``. Such a filter is constant
        when that is below zero for every input (ReLU gives 0) or below a quarter of
        the float32 spacing at ``b`` (every rounding returns ``b``). Returns a bool
        mask [shape=(filters,)].
        """
        w = self.conv.weight.detach().double().flatten(1)
        b = self.conv.bias.detach().double()
        reach = w.abs().sum(dim=1) * input_bound  # largest |w . x|
        spacing = torch.from_numpy(np.spacing(self.conv.bias.detach().float().cpu().numpy()).astype(np.float64))
        return (b + reach < 0) | (reach < spacing.to(b.device) / 4)

    def _max_first(self, x: torch.Tensor, *, input_bound: float = math.inf) -> torch.Tensor:
        """The same values as ``forward`` in inference, with the max taken first.

        Batch norm in eval mode is ``alpha * x + beta`` per channel and ReLU is
        monotone, so the max over frequency of ``bn(relu(z))`` is ``bn(relu(max z))``
        where ``alpha >= 0`` and ``bn(relu(min z))`` where ``alpha < 0``: the same
        operations on the same element, so the same float. ``min z = -max(-z)``, and
        ``-z`` is the convolution with negated weights and bias (negation is exact),
        so one convolution and one max pass over the full-resolution output remain;
        ReLU and batch norm run on the pooled (filters, frames) output instead. About
        a fifth of musicnn's CPU time.

        Filters whose output is constant (:meth:`constant_filters`) are not convolved:
        their channels are that constant, the batch norm of ReLU of their bias, so only
        the live ones cost anything. The MSD model keeps 47 of its 408 timbral filters
        and 47 of 153 temporal ones: the same floats, about 5x less CPU time.
        """
        bn = self.bn
        alpha = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        sign = torch.where(alpha < 0, -1.0, 1.0).to(x.dtype)  # (filters,)
        weight = self.conv.weight * sign.view(-1, 1, 1, 1).to(self.conv.weight.dtype)
        bias = self.conv.bias * sign.to(self.conv.bias.dtype)
        constant = self.constant_filters(input_bound)
        live = torch.nonzero(~constant).flatten().tolist()
        if len(live) < len(constant):
            weight, bias, sign = weight[live], bias[live], sign[live]
        z = F.conv2d(x, weight, bias)  # (batch, live filters, frames, bins), sign-flipped where alpha < 0
        picked = z.amax(dim=-1) * sign.view(1, -1, 1).to(z.dtype)  # (batch, live filters, frames)
        out = F.batch_norm(torch.relu(picked), bn.running_mean[live], bn.running_var[live], bn.weight[live],
                           bn.bias[live], False, 0.0, bn.eps)
        if len(live) == len(constant):
            return out
        dead = torch.nonzero(constant).flatten().tolist()
        # z = bias exactly on those filters, for every frame.
        fill = F.batch_norm(torch.relu(self.conv.bias[dead].to(x.dtype)).view(1, -1, 1), bn.running_mean[dead],
                            bn.running_var[dead], bn.weight[dead], bn.bias[dead], False, 0.0, bn.eps)
        # Live channels first, then the constant ones; a gather puts each back in its place.
        place = torch.tensor(live + dead, device=x.device).argsort()
        both = torch.cat([out, fill.expand(out.shape[0], -1, out.shape[2])], dim=1)
        return both.index_select(1, place)


class _MidendConv(nn.Module):
    """7-frame conv over all input channels -> ReLU -> batch norm. [b, c, t] -> [b, 64, t]."""

    def __init__(self, in_channels: int, filters: int) -> None:
        super().__init__()
        # TF convolves a (frames, channels, 1) image with a (7, channels) kernel: a 1-d conv.
        self.conv = nn.Conv1d(in_channels, filters, kernel_size=7)
        self.bn = nn.BatchNorm1d(filters, eps=_TF_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(torch.relu(self.conv(F.pad(x, (3, 3)))))


class Musicnn(nn.Module):
    """musicnn: log-mel patches -> 50 tag logits and its intermediate features.

    ``forward`` takes [shape=(batch, frames, 96)] (musicnn's layout: time first) and
    returns a dict of ``logits`` [batch, 50], ``penultimate`` [batch, 200] and ``pool``
    [batch, 1506] (max and mean over time of the 753 mid-end channels, interleaved as
    TensorFlow flattens them). Any number of frames works; the model was trained on
    187-frame (3-s) patches.
    """

    def __init__(self, *, n_classes: int = 50, midend_filters: int = 64, backend_units: int = 200) -> None:
        super().__init__()
        n_mels = N_MELS
        timbral_filters, temporal_filters = int(1.6 * 128), int(1.6 * 32)
        self.input_bn = _bn(1)
        # Timbral: "valid" convs on a time-padded input (pad 3 + 3 for 7 frames).
        self.timbral = nn.ModuleList([
            _PoolOverFrequency(timbral_filters, (7, int(0.4 * n_mels)), (3, 3)),
            _PoolOverFrequency(timbral_filters, (7, int(0.7 * n_mels)), (3, 3)),
        ])
        # Temporal: TF "same" padding of an even kernel k puts (k-1)//2 before, k//2 after.
        self.temporal = nn.ModuleList([
            _PoolOverFrequency(temporal_filters, (k, 1), ((k - 1) // 2, k // 2)) for k in (128, 64, 32)
        ])
        front = 2 * timbral_filters + 3 * temporal_filters  # 561
        self.midend = nn.ModuleList([
            _MidendConv(front, midend_filters),
            _MidendConv(midend_filters, midend_filters),
            _MidendConv(midend_filters, midend_filters),
        ])
        pooled = 2 * (front + 3 * midend_filters)  # 1506
        self.pool_bn = nn.BatchNorm1d(pooled, eps=_TF_BN_EPS)
        self.dense = nn.Linear(pooled, backend_units)
        self.dense_bn = nn.BatchNorm1d(backend_units, eps=_TF_BN_EPS)
        self.dropout = nn.Dropout(0.5)
        self.classifier = nn.Linear(backend_units, n_classes)

    def input_bound(self) -> float:
        """A bound on ``|input_bn(x)|`` for any musicnn spectrogram: ``log10(1 + 10000 * mel)``
        lies in [0, 42.6) for every finite float32 ``mel``."""
        bn = self.input_bn
        weight, bias = float(bn.weight.detach()[0]), float(bn.bias.detach()[0])
        scale = weight / math.sqrt(float(bn.running_var[0]) + bn.eps)
        shift = bias - float(bn.running_mean[0]) * scale
        return max(abs(shift), abs(LOG_MEL_CEILING * scale + shift)) * (1 + 1e-3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """[shape=(batch, frames, 96)] -> dict of logits, penultimate, pool (see class docstring)."""
        x = self.input_bn(x.unsqueeze(1))  # (batch, 1, frames, mels)
        bound = self.input_bound()
        front = torch.cat([block(x, input_bound=bound) for block in (*self.timbral, *self.temporal)], dim=1)  # (b, 561, t)
        mid1 = self.midend[0](front)
        mid2 = self.midend[1](mid1) + mid1
        mid3 = self.midend[2](mid2) + mid2
        features = torch.cat([front, mid1, mid2, mid3], dim=1)  # (batch, 753, frames)
        # TF concatenates [max, mean] on a trailing axis and flattens: max0, mean0, max1, ...
        pool = torch.stack([features.amax(dim=-1), features.mean(dim=-1)], dim=-1).flatten(1)
        hidden = self.dense_bn(torch.relu(self.dense(self.dropout(self.pool_bn(pool)))))
        logits = self.classifier(self.dropout(hidden))
        return {"logits": logits, "penultimate": hidden, "pool": pool}


def split_patches(mel: torch.Tensor, *, patch_frames: int = PATCH_FRAMES) -> tuple[torch.Tensor, int]:
    """Cut spectrograms into consecutive non-overlapping patches, as musicnn does.

    mel [shape=(batch, 96, frames)] -> (patches [shape=(batch * n, patch_frames, 96)], n).
    The last partial patch is dropped (musicnn's ``batch_data``); a spectrogram shorter
    than one patch is used whole, as one patch.
    """
    batch, _, frames = mel.shape
    n = max(1, frames // patch_frames)
    width = patch_frames if frames >= patch_frames else frames
    x = mel[..., : n * width].transpose(1, 2)  # (batch, n * width, 96)
    return x.reshape(batch * n, width, mel.shape[1]), n


#: The converted MSD_musicnn weights shipped in the package (see training/convert_musicnn.py).
DEFAULT_WEIGHTS = Path(__file__).with_name("models") / "musicnn_msd.pt"
#: Marker of a converted-weights file.
WEIGHTS_FORMAT = "mmgenre-musicnn"


def save_weights(path: str | os.PathLike, model: Musicnn, *, source: dict[str, Any], licence: str) -> Path:
    """Write converted weights: ``{format, state_dict, labels, source, licence}`` (plain values only)."""
    from .storage import atomic_torch_save

    payload = {
        "format": WEIGHTS_FORMAT,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "labels": list(MSD_LABELS),
        "source": dict(source),
        "licence": licence,
    }
    return atomic_torch_save(path, payload)


def load_pretrained(path: str | os.PathLike | None = None) -> Musicnn:
    """The MSD-trained musicnn, in eval mode, from ``path`` (default: the shipped weights).

    Raises :class:`~mmgenre_core.errors.CheckpointError` for a file that is not
    converted musicnn weights.
    """
    from .storage import read_weights_only
    from .errors import CheckpointError

    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    payload = read_weights_only(path)
    if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
        raise CheckpointError(f"{path}: not converted musicnn weights (no '{WEIGHTS_FORMAT}' marker)")
    model = Musicnn()
    try:
        model.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: musicnn weights do not fit the network ({exc})") from exc
    return model.eval()


__all__ = ["Musicnn", "MSD_LABELS", "PATCH_FRAMES", "FEATURE_DIMS", "DEFAULT_WEIGHTS",
           "split_patches", "save_weights", "load_pretrained"]
