"""Log-mel spectrograms: the model's front end, on any device, as librosa or musicnn compute them."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..config import AudioConfig


def _musicnn_compress(mel: torch.Tensor) -> torch.Tensor:
    """musicnn's ``np.log10(10000 * mel.astype(np.float16) + 1)``, [shape=(..., n_mels, frames)].

    musicnn rounds the mel power to float16 before the log (numpy 1.x then does the
    arithmetic in float32); the pretrained weights saw exactly that, so the rounding
    is kept. Powers beyond float16's range (inf in musicnn) saturate at its maximum.
    """
    mel16 = mel.clamp(max=float(torch.finfo(torch.float16).max)).half().float()
    return torch.log10(10000.0 * mel16 + 1.0)


def _hz_to_slaney_mel(hz: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    mels = hz / f_sp
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    log_t = hz >= min_log_hz
    mels[log_t] = min_log_mel + np.log(hz[log_t] / min_log_hz) / logstep
    return mels


def _slaney_mel_to_hz(mels: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    hz = f_sp * mels
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    log_t = mels >= min_log_mel
    hz[log_t] = min_log_hz * np.exp(logstep * (mels[log_t] - min_log_mel))
    return hz


def slaney_mel_filterbank(*, sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                          fmax: float | None = None) -> np.ndarray:
    """librosa's ``filters.mel(htk=False, norm="slaney")``, the same float32 values
    [shape=(n_mels, 1 + n_fft // 2)].

    The same numpy operations in the same order as librosa 0.10-0.11 (tested equal):
    importing ``librosa.filters`` pulls in scipy.signal, about 1.5 s of every start-up
    (``beet mmgenre`` on cached features spends most of its time there otherwise).
    """
    if fmax is None:
        fmax = float(sample_rate) / 2
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    edges = _hz_to_slaney_mel(np.asarray([fmin, fmax], dtype=np.float64))
    mel_f = _slaney_mel_to_hz(np.linspace(edges[0], edges[1], n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, np.newaxis]
    return weights


class LogMel(torch.nn.Module):
    """Log-mel spectrogram in dB (or musicnn's log compression), matching librosa exactly.

    ``librosa.power_to_db(librosa.feature.melspectrogram(y, center=True,
    pad_mode="constant", power=2, htk=False, norm="slaney"), ref=1.0, amin=1e-10,
    top_db=config.top_db)``, with ``top_db`` applied per example. With
    ``config.scale == "musicnn"`` the mel power is compressed as musicnn does
    (``log10(1 + 10000 * mel)`` of the float16-rounded power) instead of converted to dB.
    """

    amin = 1e-10
    ref = 1.0
    #: Windows per STFT call on the CPU (see forward).
    cpu_chunk = 4

    def __init__(self, config: AudioConfig) -> None:
        super().__init__()
        self.n_fft = config.n_fft
        self.hop_length = config.hop_length
        self.top_db = config.top_db
        self.scale = config.scale
        mel = slaney_mel_filterbank(sample_rate=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels,
                                    fmin=config.fmin, fmax=config.fmax)
        # Not persistent: rebuilt from the config, so checkpoints stay small.
        self.register_buffer("mel_basis", torch.from_numpy(mel).float(), persistent=False)
        # librosa's "hann" window is the periodic one.
        self.register_buffer(
            "window", torch.hann_window(config.n_fft, periodic=True), persistent=False
        )

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """[shape=(batch, samples)] -> float32 log-mel dB [shape=(batch, n_mels, frames)].

        ``frames = 1 + samples // hop_length``. Always computed in float32, also under
        autocast (half-precision power spectra lose the quiet bands).
        """
        if waveform.dim() != 2:
            raise ValueError(f"LogMel expects [batch, samples], got shape {tuple(waveform.shape)}")
        # The complex STFT of a 30-s window takes ~10 MB; on the CPU a batch is done a few
        # windows at a time, which bounds peak memory (400 MB less for 16 windows) at no
        # cost in speed. GPUs get the whole batch at once.
        chunk = self.cpu_chunk if waveform.device.type == "cpu" else waveform.shape[0]
        if waveform.shape[0] > chunk:
            return torch.cat([self._log_mel(part) for part in waveform.split(chunk)], dim=0)
        return self._log_mel(waveform)

    def _log_mel(self, waveform: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            x = waveform.float()
            spec = torch.stft(
                x,
                n_fft=self.n_fft,
                hop_length=self.hop_length,
                win_length=self.n_fft,
                window=self.window.float(),
                center=True,
                pad_mode="constant",  # librosa >= 0.10's default
                normalized=False,
                onesided=True,
                return_complex=True,
            )
            # |X|^2 [batch, freq, frames]; re*re + im*im in place is ~8x faster on CPU
            # than abs()**2 or view_as_real().pow(2).sum(-1).
            real, imag = spec.real, spec.imag
            power = real * real
            power.addcmul_(imag, imag)
            mel = torch.matmul(self.mel_basis.float(), power)  # [batch, n_mels, frames]
            if self.scale == "musicnn":
                return _musicnn_compress(mel)
            db = 10.0 * torch.log10(torch.clamp(mel, min=self.amin))
            db = db - 10.0 * math.log10(max(self.amin, self.ref))
            if self.top_db is not None:
                peak = db.amax(dim=(-2, -1), keepdim=True)
                db = torch.maximum(db, peak - self.top_db)
        return db


__all__ = ["LogMel", "slaney_mel_filterbank"]
