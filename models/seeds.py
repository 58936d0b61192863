"""Seeds: the one range a client may ask for and a random one is drawn from.

Short enough to read and retype, and every seed fits a signed 64-bit database column. The routes
bound the ``seed`` field with :data:`MAX_SEED`, the registry fixes a task's seed with
:func:`resolve_seed` before it is recorded, and :func:`models.generate` does the same for a
request that still says ``-1``.
"""

from __future__ import annotations

import secrets
from typing import Optional

MAX_SEED = 2**32 - 1
RANDOM = -1  # what a request sends for "pick one"


def resolve_seed(seed: Optional[int]) -> int:
    """The seed to run with: the one asked for, or a random one for ``-1``/``None``."""
    if seed is None or seed < 0:
        return secrets.randbelow(MAX_SEED + 1)
    if seed > MAX_SEED:
        raise ValueError(f"seed must be at most {MAX_SEED}, got {seed}")
    return seed
