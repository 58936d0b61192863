"""Loading the deployment files, shared by the deploy suites."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from models.kinds import ModelKind

ROOT = Path(__file__).resolve().parents[2]
SERVE_CONFIG = ROOT / "serve_config.yaml"
KUBERAY_DIR = ROOT / "deploy" / "kuberay"
MODEL_DEPLOYMENTS = tuple(kind.deployment for kind in ModelKind)
SECRETS = ("JWT_SECRET", "ADMIN_PASSWORD", "DATABASE_URL")
SECRET_NAME = "qwen-image-secrets"
# In the same Secret, read by KubeRay for the GCS's Redis (not by the service's own processes)
REDIS_PASSWORD = "REDIS_PASSWORD"


def serve_config() -> dict[str, Any]:
    return yaml.safe_load(SERVE_CONFIG.read_text())


def kuberay_documents() -> list[tuple[Path, dict[str, Any]]]:
    return [
        (path, doc)
        for path in sorted(KUBERAY_DIR.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc is not None
    ]


def the(kind: str) -> dict[str, Any]:
    [doc] = [doc for _, doc in kuberay_documents() if doc.get("kind") == kind]
    return doc


def deployments(app: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in app["deployments"]}


def walk_keys(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from walk_keys(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk_keys(item)
