"""The registry's events and outbox on a real SQLite database, without Ray.

Dispatching to model deployments needs Ray, so these tests replace ``_dispatch`` with a no-op
(isolating the registry's bookkeeping) and drive the replica reports by hand.
"""

from __future__ import annotations

import asyncio

from sqlmodel import select

from models.kinds import ModelKind
from serving import event_journal as ev
from serving.protocol import (
    FeedItem,
    GenerationParameters,
    PreviewImage,
    Progress,
    QueueMoved,
    ResultLocation,
    TaskEvent,
    TaskQueued,
    TaskSpec,
    WebhookRequest,
)
from serving.registry.core import RegistryCore
from storage import TaskRecord, User, session_scope
from storage.tables import TaskWebhook, WebhookDelivery


def core_for(tmp_path) -> RegistryCore:
    core = RegistryCore("unit", {"data_dir": str(tmp_path), "cleanup_interval_seconds": 0}, "v1")
    core._dispatch = lambda task: setattr(task, "attempt", task.attempt + 1)  # no model deployments here
    core.webhooks.start = lambda: None  # nothing is delivered in these tests; the outbox is what is checked
    return core


def spec(task_id: str, user_id: int, webhook=None) -> TaskSpec:
    return TaskSpec(
        task_id=task_id,
        parameters=GenerationParameters(kind=ModelKind.text_to_image, prompt="p", num_inference_steps=20),
        kind=ModelKind.text_to_image,
        image_count=1,
        user_id=user_id,
        task_type="text_to_image",
        webhook=webhook,
    )


def add_user(core) -> int:
    with session_scope(core.engine) as session:
        user = User(username="u", hashed_password="x")
        session.add(user)
        session.flush()
        return user.id


def event(event_id: int, type_) -> TaskEvent:
    data = (
        PreviewImage(current_step=1, total_steps=2, width=1, height=1, media_type="image/webp", b64="AA==")
        if type_ == "preview"
        else (TaskQueued(position=1) if type_ == "queued" else Progress.of(1, 2))
    )
    return TaskEvent(event_id, type_, "t", 1, data)


def ids(events: list[FeedItem]) -> list[int]:
    return [e.id for e in events if isinstance(e, TaskEvent)]


def outbox(core) -> list[WebhookDelivery]:
    with session_scope(core.engine) as session:
        return list(session.exec(select(WebhookDelivery).order_by(WebhookDelivery.id)))


def test_a_task_life_publishes_ordered_events_and_writes_its_outbox_with_each_status(tmp_path):
    core = core_for(tmp_path)
    user_id = add_user(core)
    hook = WebhookRequest(url="https://hooks.example.com/in", events=("started", "completed"))

    async def scenario():
        await core.start()
        poll = await core.poll_events(None, None, 0)
        cursor = poll.cursor
        await core.create(spec("a", user_id, hook))
        await core.create(spec("b", user_id))
        task = core.tasks["a"]
        assert await core.mark_running("a", core.epoch, task.attempt)
        await core.writer.flush()  # writes are made on the registry's writer thread
        assert [d.event_type for d in outbox(core)] == ["task.started"]  # committed with the status
        await core.report_progress("a", core.epoch, task.attempt, 0, 10)
        await core.report_preview(
            "a",
            core.epoch,
            task.attempt,
            0,
            {"step": 10, "total": 20, "width": 2, "height": 1, "media_type": "image/webp", "b64": "AA=="},
        )
        task.result = ResultLocation(result_path="results/a/x.png", result_filename="x.png", generation_seconds=1.25)
        core._finish(task, "completed", result_path="results/a/x.png", result_filename="x.png")
        await core.writer.flush()  # the terminal event is published once the end is stored
        return (await core.poll_events(core.epoch, cursor, 0)).events

    events = asyncio.run(scenario())
    mine = [e for e in events if isinstance(e, TaskEvent) and e.task_id == "a"]
    assert [e.type for e in mine] == ["queued", "started", "progress", "preview", "completed"]
    # A running task's end moves positions too (its user runs one fewer: fair share may reorder).
    assert events[-1] == QueueMoved(kind="text_to_image")
    assert [e.id for e in mine] == sorted({e.id for e in mine})
    assert mine[0].payload() == {"task_id": "a", "position": 1}
    # The progress event speaks the status's words (GET /tasks/{id} "progress").
    assert mine[2].payload() == {"task_id": "a", "current_step": 10, "total_steps": 20, "percent": 50.0}
    assert mine[3].payload() == {
        "task_id": "a",
        "current_step": 10,
        "total_steps": 20,
        "width": 2,
        "height": 1,
        "media_type": "image/webp",
        "b64": "AA==",
    }
    assert mine[4].payload() == {
        "task_id": "a",
        "seed": core.tasks["a"].seed,
        "result_url": "/tasks/a/result",
        "generation_seconds": 1.25,
    }
    with session_scope(core.engine) as session:
        record = session.exec(select(TaskRecord).where(TaskRecord.task_id == "a")).one()
        assert session.get(TaskWebhook, "a").events == ["started", "completed"]
    # The terminal event rebuilt from the record is the very same event.
    rebuilt = ev.terminal_event_from_record(record)
    assert rebuilt is not None and rebuilt.id == mine[4].id and rebuilt.type == "completed"
    assert ev.micros(record.started_at) == mine[1].id
    rows = outbox(core)
    assert [d.event_type for d in rows] == ["task.started", "task.completed"]
    assert len({d.webhook_id for d in rows}) == 2 and '"result_url":"/tasks/a/result"' in rows[1].body


def test_resume_gets_only_what_describes_the_state_after_the_given_id(tmp_path):
    core = core_for(tmp_path)
    user_id = add_user(core)

    async def scenario():
        await core.start()
        await core.create(spec("a", user_id))
        task = core.tasks["a"]
        await core.mark_running("a", core.epoch, task.attempt)
        for step in (5, 10, 15):
            await core.report_progress("a", core.epoch, task.attempt, 0, step)
        seen = (await core.task_events("a")).events
        started_id = seen[1].id
        core._finish(task, "failed", "boom")
        await core.writer.flush()  # the terminal event is published once the end is stored
        return seen, await core.task_events("a", started_id)

    seen, resumed = asyncio.run(scenario())
    assert [e.type for e in seen] == ["queued", "started", "progress"]
    assert seen[2].data == Progress(current_step=15, total_steps=20, percent=75.0)  # only the latest is kept
    assert resumed.finished and [e.type for e in resumed.events] == ["progress", "failed"]
    assert resumed.events[-1].payload() == {"task_id": "a", "error": "boom"}


def test_event_ids_keep_growing_across_a_registry_restart(tmp_path):
    first = core_for(tmp_path)
    user_id = add_user(first)

    async def before():
        await first.start()
        await first.create(spec("a", user_id))
        return (await first.task_events("a")).events[-1].id

    last_seen = asyncio.run(before())
    second = core_for(tmp_path)

    async def after():
        await second.start()
        return await second.task_events("a", last_seen)

    answer = asyncio.run(after())
    assert [e.type for e in answer.events] == ["queued"] and answer.events[0].id > last_seen


def test_journal_poll_waits_for_a_publish_and_resets_stale_cursors(tmp_path):
    async def scenario():
        journal = ev.EventJournal("e1", capacity=3)
        first = await journal.poll(None, None, 0)
        assert first.reset and first.cursor == 0
        waiting = asyncio.create_task(journal.poll("e1", 0, 5))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # nothing published: the poll waits
        journal.publish(event(1, "queued"))
        answer = await waiting
        assert ids(answer.events) == [1] and answer.cursor == 1
        for n in range(2, 7):
            journal.publish(event(n, "progress"))
        assert (await journal.poll("e1", 1, 0)).reset  # fell out of the 3-entry journal
        assert ids((await journal.poll("e1", 4, 0)).events) == [5, 6]
        assert (await journal.poll("other-epoch", 4, 0)).reset
        timed_out = await journal.poll("e1", 6, 0.01)
        assert timed_out.events == [] and not timed_out.reset

    asyncio.run(scenario())


def test_a_poll_without_previews_skips_them_keeps_waiting_and_moves_its_cursor_past_them(tmp_path):
    async def scenario():
        journal = ev.EventJournal("e1")
        start = (await journal.poll(None, None, 0)).cursor
        waiting = asyncio.create_task(journal.poll("e1", start, 5, previews=False))
        journal.publish(event(1, "preview"))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # only a preview so far: the poll without previews goes on waiting
        journal.publish(event(2, "progress"))
        answer = await waiting
        assert ids(answer.events) == [2] and answer.cursor == start + 2
        with_previews = await journal.poll("e1", start, 0)
        assert ids(with_previews.events) == [1, 2]
        journal.publish(event(3, "preview"))
        quiet = await journal.poll("e1", start + 2, 0.01, previews=False)
        assert quiet.events == [] and quiet.cursor == start + 3 and not quiet.reset

    asyncio.run(scenario())


def test_queue_positions_are_refreshed_only_when_asked_and_changed(tmp_path):
    core = core_for(tmp_path)
    user_id = add_user(core)

    async def scenario():
        await core.start()
        for name in ("a", "b", "c"):
            await core.create(spec(name, user_id))
        await core.cancel("a")
        changed = await core.refresh_positions(["b", "c"])
        again = await core.refresh_positions(["b", "c"])
        return changed, again, (await core.task_events("c")).events

    changed, again, events = asyncio.run(scenario())
    assert (changed, again) == (2, 0)
    assert events[-1].type == "queued" and events[-1].data == TaskQueued(position=2)
