"""Names and ids of the task registry, importable without Ray or the actor (the ingress needs them)."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

NAMESPACE = "qwen_image"
_ROOT = Path(__file__).resolve().parents[2]
# The code the registry runs: a change to any of these replaces an old detached actor on redeploy.
_CODE = ("serving", "serving/registry", "storage")


def registry_name(app_name: str) -> str:
    """The registry actor's name (in :data:`NAMESPACE`) for one application."""
    return f"task-registry:{app_name}"


def new_task_id() -> str:
    return str(uuid.uuid4())


def result_filename(task_id: str, count: int) -> str:
    return f"generated_{task_id}.{'png' if count == 1 else 'zip'}"


def result_key(task_id: str, count: int) -> str:
    return f"results/{task_id}/{result_filename(task_id, count)}"


def code_version() -> str:
    """A digest of the code the registry runs, so a redeploy replaces an old detached actor."""
    digest = hashlib.sha256()
    for package in _CODE:
        for path in sorted((_ROOT / package).glob("*.py")):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
