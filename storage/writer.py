"""One thread that makes a process's database writes, in the order they were asked for, many per
transaction, off the caller's event loop.

The task registry writes every status change of every task. Made on its event loop, each write held
every other call (status reads, dispatch) for as long as the database took, and a database that did
not answer froze the registry whole. Here the event loop hands a write over and goes on; the writer
thread takes every write waiting, runs them in one transaction (one commit, one fsync for all) and
resolves each caller's future when that commit is done. Order is kept: the writes of one batch run
in the order they came, and batches one after another.

Writes that read nothing cost fewer round trips to a database server: they are held back and run
together, one ``executemany`` per statement (psycopg sends it in one pipeline). A *statement* write
(:meth:`BatchWriter.submit_statement`, such as the registry's status UPDATEs) is held back until
the next job of its batch that is not *independent*, or else until the commit; a job may hold back
its own writes too (:func:`storage.db.write_later`). An *independent* job
(``submit(job, independent=True)``) touches no row that a held-back write may touch (the creation
of a new task), so the writes held before it wait for the end of the batch. The usage counters
moved within a batch are written once, before its commit (:func:`storage.usage.buffer_usage`), and
reads that all jobs of a batch need are made once, first (``prepare`` with the jobs' hints: the
quota reads of a batch of submissions).

A write that fails is retried alone, so one bad write never fails the others of its batch, except
when the database cannot be reached: then the whole batch fails at once (no connection attempt per
write) and the callers decide what to do (the registry keeps the state and writes it again later).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Optional, TypeVar, Union

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.sql import Executable
from sqlmodel import Session

from storage.db import hold_writes, run_held_writes, session_scope, write_later
from storage.tasks import begin_write
from storage.usage import buffer_usage, flush_usage

T = TypeVar("T")
log = logging.getLogger("qwen_image.storage.writer")

# Writes per transaction at most: a batch is bounded, so one commit never carries an unbounded backlog.
MAX_BATCH = 512


class _Statement:
    """A statement write: ``statement`` with ``params``, held back and run with its like."""

    __slots__ = ("params", "statement")

    def __init__(self, statement: Executable, params: dict[str, Any]):
        self.statement = statement
        self.params = params


class _Job:
    __slots__ = ("future", "hint", "independent", "loop", "write")

    def __init__(
        self,
        write: Union[Callable[[Session], Any], _Statement],
        independent: bool,
        hint: Any,
        future: asyncio.Future,
        loop: asyncio.AbstractEventLoop,
    ):
        self.write, self.independent, self.hint, self.future, self.loop = write, independent, hint, future, loop


class BatchWriter:
    """Runs ``job(session)`` callables on one thread, batched into transactions; see the module."""

    def __init__(
        self,
        engine: Engine,
        name: str = "db-writer",
        max_batch: int = MAX_BATCH,
        prepare: Optional[Callable[[Session, list[Any]], None]] = None,
    ):
        """``prepare(session, hints)``: run first in each transaction with the hints of its jobs
        (see :meth:`submit`), when they gave any: reads that all of them need, made at once."""
        self.engine = engine
        self.prepare = prepare
        self.name = name
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[Optional[_Job]] = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self.batches = 0
        self.writes = 0

    def submit(self, job: Callable[[Session], T], *, independent: bool = False, hint: Any = None) -> asyncio.Future[T]:
        """Queue ``job``; the future resolves (on the caller's loop) once its transaction committed.
        ``independent``: the job reads and writes no row that a statement write may change (see the
        module), so the statement writes queued before it may run after it, in the same transaction.
        ``hint``: handed to ``prepare`` with those of the other jobs of the batch."""
        return self._put(job, independent, hint)

    def submit_statement(self, statement: Executable, params: dict[str, Any]) -> asyncio.Future[None]:
        """Queue a write of one statement that reads nothing and returns nothing: it is held back
        (:func:`storage.db.write_later`, whose rule on order it follows) and runs with the others of
        its statement in one ``executemany``. Resolves once committed, as :meth:`submit`."""
        return self._put(_Statement(statement, params), False, None)

    def _put(self, write: Union[Callable[[Session], Any], _Statement], independent: bool, hint: Any) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._start()
        self._queue.put(_Job(write, independent, hint, future, loop))
        return future

    async def flush(self) -> None:
        """Returns once every write asked for before this call is committed (or has failed)."""
        try:
            await self.submit(lambda session: None)
        except Exception:  # the database is away: the earlier writes have failed too, and said so
            pass

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)

    def _start(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._write(batch)
            if stop:
                return

    def _write(self, batch: list[_Job]) -> None:
        try:
            results = self._transaction(batch)
        except Exception as exc:
            if len(batch) == 1 or _unreachable(exc):
                for job in batch:
                    _resolve(job.future, job.loop, error=exc)
                return
            log.warning("a batch of %d writes failed (%r); writing them one at a time", len(batch), exc)
            for job in batch:
                self._write([job])
            return
        self.batches += 1
        self.writes += len(batch)
        for job, result in zip(batch, results, strict=True):
            _resolve(job.future, job.loop, result=result)

    def _transaction(self, batch: list[_Job]) -> list[Any]:
        with session_scope(self.engine) as session:
            begin_write(session)  # SQLite's write lock first: a quota check may be among the writes
            buffer_usage(session)  # the batch's counter changes: one statement before the commit
            hold_writes(session)
            hints = [job.hint for job in batch if job.hint is not None]
            if hints and self.prepare is not None:
                self.prepare(session, hints)
            results: list[Any] = []
            for job in batch:
                if isinstance(job.write, _Statement):
                    write_later(session, job.write.statement, job.write.params)
                    results.append(None)
                    continue
                if not job.independent:
                    run_held_writes(session)  # what came before it is written before it runs
                results.append(job.write(session))
            run_held_writes(session)
            flush_usage(session)
            return results


def _unreachable(exc: BaseException) -> bool:
    """The database did not answer (connection refused, timed out, dropped), not a refused write."""
    return isinstance(exc, OperationalError) and (
        getattr(exc, "connection_invalidated", False) or _looks_like_connection_error(exc)
    )


def _looks_like_connection_error(exc: DBAPIError) -> bool:
    text = str(exc.orig).lower() if exc.orig is not None else ""
    return any(
        word in text
        for word in ("connection", "could not connect", "timeout expired", "server closed", "terminating", "refused")
    )


def _resolve(future: asyncio.Future, loop: asyncio.AbstractEventLoop, result: Any = None, error: Any = None) -> None:
    def settle() -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the caller's loop has closed: nobody waits for this answer
        pass


__all__ = ["BatchWriter", "MAX_BATCH"]
