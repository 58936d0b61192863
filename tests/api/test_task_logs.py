"""One task followed by its id through Ray's log files: the ingress, the registry and the model replica
each wrote JSON lines with the task's id, its user, its kind, the event and which replica wrote it."""

from __future__ import annotations

import json
from pathlib import Path

import ray

from tests.api.helpers import submit_t2i, wait_status
from tests.conftest import wait_for

FIELDS = {"task_id", "user_id", "kind", "event", "replica"}


def logs_dir() -> Path:
    return Path(ray._private.worker._global_node.get_logs_dir_path())


def events_of(task_id: str) -> list[dict]:
    """Every JSON log line in Ray's log files that is an event of ``task_id`` (each writer's in order)."""
    found = []
    for path in logs_dir().rglob("*"):
        if not path.is_file() or path.suffix not in {".log", ".err", ".out"}:
            continue
        for line in path.read_bytes().decode("utf-8", "replace").splitlines():
            if task_id in line and line.startswith("{"):
                record = json.loads(line)
                if record.get("task_id") == task_id and "event" in record:
                    found.append({**record, "file": path.name})
    return found


def lines_naming(task_id: str) -> list[tuple[str, str]]:
    return [
        (path.name, line[:400])
        for path in logs_dir().rglob("*")
        if path.is_file()
        for line in path.read_bytes().decode("utf-8", "replace").splitlines()
        if task_id in line
    ]


def test_one_task_is_followed_by_its_id_across_ingress_registry_and_replica(open_client):
    task_id = submit_t2i(open_client, {}, num_inference_steps=20)
    assert wait_status(open_client, {}, task_id)["status"] == "completed"

    def whole_life():
        events = events_of(task_id)
        return events if {"submitted", "completed", "generation_finished"} <= {e["event"] for e in events} else None

    try:
        events = wait_for(whole_life, timeout=30, interval=0.5, what=f"the log events of {task_id}")
    except AssertionError:
        raise AssertionError(f"lines naming the task: {lines_naming(task_id)[:30]}") from None
    for record in events:
        assert set(record) >= FIELDS, record
        assert record["kind"] == "text_to_image" and record["user_id"] is not None
    by_writer = {}
    for record in events:
        writer = record.get("deployment") or record["replica"]
        by_writer.setdefault(writer, []).append(record["event"])
    # Serve names a deployment <application>_<deployment> in its log lines.
    assert set(by_writer) == {"open_Ingress", "task-registry:open", "open_TextToImage"}, by_writer
    assert by_writer["open_Ingress"] == ["submitted"]
    assert by_writer["task-registry:open"] == ["queued", "dispatched", "started", "completed"]
    assert by_writer["open_TextToImage"] == ["generation_started", "generation_finished"]
    # Serve's JSON lines carry the application and the replica that wrote them.
    replica_lines = [r for r in events if r.get("deployment") == "open_TextToImage"]
    assert {r["application"] for r in replica_lines} == {"open"}
    assert all(r["file"].startswith("replica_open_TextToImage") for r in replica_lines)
    [finished] = [r for r in events if r["event"] == "generation_finished"]
    assert finished["steps"] == 20 and finished["generation_seconds"] > 0
