"""Seams around one generation that a profile may fill in; every real profile leaves them empty.

Like LitServe's hooks, the runtime calls them at fixed points and knows nothing of what they do:
the ``faulty`` test profile (``models.faulty``) uses them to fail on request, so the production
path has no test-only branch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

StepCallback = Callable[[int, int], None]


class GenerationHooks:
    """The do-nothing hooks of every real profile."""

    def before_generation(self, prompt: str, on_step: Optional[StepCallback]) -> Optional[StepCallback]:
        """Called before a generation starts; returns the step callback to use (may raise)."""
        return on_step

    def before_encoding(self, prompt: str) -> None:
        """Called before a result's images are encoded (may raise ``OSError``)."""
