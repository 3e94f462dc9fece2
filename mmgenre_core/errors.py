"""The small exception hierarchy of mmgenre.

Every error the package raises on purpose derives from :class:`MMGenreError`, so
callers (the CLI, the beets plugin) can catch one class, log its message, and go
on with the next track.
"""

from __future__ import annotations


class MMGenreError(Exception):
    """Base class of every error mmgenre raises on purpose."""


class AudioError(MMGenreError):
    """An audio file could not be turned into a spectrogram."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class AudioDecodeError(AudioError):
    """The file is not audio, or its codec/container cannot be decoded."""


class EmptyAudioError(AudioError):
    """The file is empty (0 bytes) or decodes to no samples (e.g. truncated)."""


class AudioTooShortError(AudioError):
    """The audio is shorter than the minimum analysable duration."""


class SilentAudioError(AudioError):
    """The analysed part of the audio is digital silence."""


class CheckpointError(MMGenreError):
    """A checkpoint file is missing, truncated, foreign or inconsistent."""


class ModelNotFoundError(CheckpointError):
    """No model file exists where one was expected."""


class ConfigError(MMGenreError, ValueError):
    """A configuration value is invalid."""


class InputFileError(MMGenreError):
    """A side input named by the user (e.g. ``--lyrics-file``) is missing or unreadable."""
