"""How a training ends early, as exceptions (no numpy here: the scripts' command-line helper
imports them before anything heavy)."""

from __future__ import annotations

from pathlib import Path


class TrainingDiverged(FloatingPointError):
    """A non-finite loss, gradient, parameter or evaluation: training stopped, the last good
    checkpoint kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; ``checkpoint`` is where the state was saved (or None)."""

    def __init__(self, message: str, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint
