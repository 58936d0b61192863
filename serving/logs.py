"""Task events as structured log lines: one JSON object per event, so a task is followed by its id.

Every event line has ``event``, ``task_id``, ``user_id``, ``kind`` and ``replica`` (which process
wrote it), plus what the event knows (attempt, status, error, seconds). No prompt, password, token or
key is ever a field.

- In Serve replicas (Ingress, TextToImage, ImageEdit) the events go to Serve's own logger, which the
  deployments configure with ``logging_config`` encoding JSON (:data:`SERVE_LOGGING`): they land in
  Ray's ``logs/serve/replica_<app>_<deployment>_<id>.log`` with Serve's fields (deployment, replica,
  application, request_id) beside ours.
- The task registry is a plain Ray actor: its events are JSON lines on its stderr, which Ray keeps
  in ``logs/worker-<id>-<pid>.err``, with ``replica`` set to the registry's actor name.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any, Optional

from ray.serve.schema import LoggingConfig

# Serve replicas log JSON lines (Serve adds deployment, replica, application and request_id).
SERVE_LOGGING = LoggingConfig(encoding="JSON", log_level="INFO")

SERVE_LOGGER = "ray.serve"
SERVE_EXTRA_FIELDS = "ray_serve_extra_fields"
REGISTRY_LOGGER = "qwen_image.events"


def task_event(
    logger: logging.Logger,
    event: str,
    *,
    task_id: str,
    user_id: Optional[int],
    kind: str,
    level: int = logging.INFO,
    exc_info: Any = None,
    **fields: Any,
) -> None:
    """Log one task event as structured fields (the message repeats the event for text readers)."""
    if logger.isEnabledFor(level):
        record = {"event": event, "task_id": task_id, "user_id": user_id, "kind": kind, **fields}
        if logger.name == SERVE_LOGGER:
            # Serve's filters replace and then drop a record's own task_id (Ray's task id goes by that
            # name); fields under this key are added to the JSON line as they are.
            record = {SERVE_EXTRA_FIELDS: record}
        logger.log(level, "task %s %s", task_id, event, exc_info=exc_info, extra=record)


def replica_events() -> logging.Logger:
    """The logger of task events inside a Serve replica: Serve's own (JSON per ``SERVE_LOGGING``)."""
    return logging.getLogger(SERVE_LOGGER)


class JSONLines(logging.Formatter):
    """One JSON object per record: time, level, message and the record's structured fields."""

    STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

    def __init__(self, replica: str):
        super().__init__()
        self.replica = replica

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "asctime": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "levelname": record.levelname,
            "message": record.getMessage(),
            "replica": self.replica,
        }
        line.update((k, v) for k, v in vars(record).items() if k not in self.STANDARD)
        if record.exc_info:
            line["exc_text"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def registry_events(replica: str) -> logging.Logger:
    """The registry's event logger: JSON lines on stderr (Ray's worker log file), set up once."""
    logger = logging.getLogger(REGISTRY_LOGGER)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JSONLines(replica))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger
