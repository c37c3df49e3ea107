"""The training side's user-facing error (importable without PyTorch)."""

from __future__ import annotations

__all__ = ["TrainError"]


class TrainError(ValueError):
    """A training run that cannot start or continue: a bad option, a missing or mismatched
    checkpoint, a missing PyTorch. The message names the rule, the value and the fix."""
