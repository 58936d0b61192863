"""Persistence: SQLModel tables and queries, the engine factory, and the result store."""

from storage.db import init_db, make_engine, session_scope
from storage.results import FsspecResultStore, LocalResultStore, MemoryResultStore, ResultStore, open_result_store
from storage.tables import ApiKey, TaskRecord, TaskStatus, TaskType, User, utcnow

__all__ = [
    "make_engine",
    "init_db",
    "session_scope",
    "ApiKey",
    "User",
    "TaskRecord",
    "TaskStatus",
    "TaskType",
    "utcnow",
    "ResultStore",
    "LocalResultStore",
    "MemoryResultStore",
    "FsspecResultStore",
    "open_result_store",
]
