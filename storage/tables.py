"""Database tables. Timestamps are stored as UTC and come back timezone-aware."""

from __future__ import annotations

import enum
import secrets
import unicodedata
from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import JSON, BigInteger, Column, DateTime, ForeignKey, Index, Integer, String, TypeDecorator, event
from sqlmodel import Field, SQLModel

# What a task is (text_to_image, image_edit, batch_edit): the kind table in models.kinds defines the
# task types and which kind runs each; records and statistics name them by it.
from models.kinds import TaskType as TaskType
from models.profiles import PAIR_ADAPTER_BASE


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Stores naive UTC (portable across SQLite and PostgreSQL), returns aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: Optional[datetime], dialect) -> Optional[datetime]:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass an aware datetime")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: Optional[datetime], dialect) -> Optional[datetime]:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc)


class TaskStatus(str, enum.Enum):
    pending = "pending"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (TaskStatus.completed, TaskStatus.failed, TaskStatus.cancelled)


UNFINISHED = (TaskStatus.pending.value, TaskStatus.running.value)


def username_key(username: str) -> str:
    """What makes two usernames the same: NFKC-normalised and case-folded (``Admin`` = ``ａｄｍｉｎ`` = ``admin``)."""
    return unicodedata.normalize("NFKC", username).casefold()


def new_token_key() -> str:
    return secrets.token_urlsafe(16)


class User(SQLModel, table=True):
    __tablename__ = "users"
    # SQLite would otherwise hand a deleted user's id (the highest) to the next user, and with it
    # whatever still names that id: live tasks, tokens. PostgreSQL sequences never reuse ids.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Optional[int] = Field(default=None, primary_key=True)
    username: str = Field(max_length=50, unique=True, index=True)
    # username_key(username), kept by the listeners below; unique, so look-alike names are refused.
    username_key: str = Field(default="", unique=True, index=True)
    email: Optional[str] = Field(default=None, max_length=255)
    hashed_password: str
    is_active: bool = True
    is_admin: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # Bumped on password change or disable; tokens carry it and older ones stop working.
    token_version: int = 0
    # Random per account and carried in its tokens: a token names the account, not only its id.
    token_key: str = Field(default_factory=new_token_key, max_length=32)
    # Per-user quota overrides; NULL means the service default.
    daily_limit: Optional[int] = None
    monthly_limit: Optional[int] = None


@event.listens_for(User, "before_insert")
@event.listens_for(User, "before_update")
def _keep_username_key(_mapper, _connection, user: User) -> None:
    user.username_key = username_key(user.username)


class LoginFailure(SQLModel, table=True):
    """Failed log-ins counted under a key (an account and address pair, or an address), for every replica."""

    __tablename__ = "login_failures"

    # sha256 of what is counted, so neither names nor addresses are kept in clear.
    key: str = Field(primary_key=True, max_length=64)
    failures: int = 0
    last_failure_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)


class AddressCounter(SQLModel, table=True):
    """Requests counted per client address in a fixed window (registrations, log-ins), for every replica."""

    __tablename__ = "address_counters"

    key: str = Field(primary_key=True, max_length=64)  # sha256 of what is counted (no address in clear)
    count: int = 0
    # The window's end, not its start: limiters with different windows share the table and each
    # may forget the rows whose window is over.
    window_ends_at: datetime = Field(sa_type=UTCDateTime, index=True)


class ServiceFlag(SQLModel, table=True):
    """A setting an administrator changes at run time (``registration_open``): every replica and
    every restart reads the same value; a flag never set leaves the environment's setting in force."""

    __tablename__ = "service_flags"

    name: str = Field(primary_key=True, max_length=64)
    value: str = Field(max_length=256)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class TaskRecord(SQLModel, table=True):
    __tablename__ = "task_records"
    __table_args__ = (
        Index("ix_task_records_user_created", "user_id", "created_at"),
        Index("ix_task_records_status_created", "status", "created_at"),
        Index("ix_task_records_type_created", "task_type", "created_at"),
    )

    id: Optional[int] = Field(default=None, primary_key=True)
    task_id: str = Field(max_length=36, unique=True, index=True)
    user_id: Optional[int] = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    )
    task_type: str = Field(max_length=20)
    prompt: str
    negative_prompt: Optional[str] = None
    parameters: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default=TaskStatus.pending.value, max_length=10)
    result_path: Optional[str] = None
    result_filename: Optional[str] = None
    error_message: Optional[str] = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    started_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)
    completed_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)
    execution_time: Optional[float] = None
    # Images this task asks for: what quotas count.
    image_count: int = 1
    seed: Optional[int] = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    # How many times a replica has started this task (a crash may cost one retry).
    attempts: int = 0
    # Store keys of the uploaded inputs, so the task can be re-run after a restart.
    input_keys: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class ApiKey(SQLModel, table=True):
    """A user's API key. Only the key's SHA-256 is kept; ``prefix`` is its first characters, for display."""

    __tablename__ = "api_keys"

    id: Optional[int] = Field(default=None, primary_key=True)
    user_id: int = Field(
        sa_column=Column(Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    name: str = Field(max_length=100)
    prefix: str = Field(max_length=16)
    key_hash: str = Field(max_length=64, unique=True, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)
    last_used_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)
    # The owner's token version when the key was made: a password change made after it ends the key.
    token_version: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class RevokedToken(SQLModel, table=True):
    """A login token ended by log-out before its expiry, by its id (``jti``); kept until it expires."""

    __tablename__ = "revoked_tokens"

    jti: str = Field(primary_key=True, max_length=32)
    user_id: int = Field(sa_column=Column(Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False))
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)


# ---------------------------------------------------------------- webhooks
# New tables (no change to existing ones): init_db creates them on start-up.


class WebhookSecret(SQLModel, table=True):
    """A user's Standard Webhooks signing secret (``whsec_`` + base64). Stored as is: it signs."""

    __tablename__ = "webhook_secrets"

    user_id: int = Field(sa_column=Column(Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True))
    secret: str = Field(max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class TaskWebhook(SQLModel, table=True):
    """Where a task's events are delivered, and which of them (set at submission)."""

    __tablename__ = "task_webhooks"

    task_id: str = Field(
        sa_column=Column(String(36), ForeignKey("task_records.task_id", ondelete="CASCADE"), primary_key=True)
    )
    url: str = Field(max_length=2048)
    events: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class WebhookDelivery(SQLModel, table=True):
    """The outbox: one row per event to deliver, written in the transaction of the status change.

    ``body`` is the exact JSON sent on every attempt, ``webhook_id`` the ``webhook-id`` header:
    both stay the same across retries. ``status``: pending, delivered, failed (retries used up or
    the URL refused), gone (the receiver answered 410).
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    webhook_id: str = Field(max_length=40, unique=True)
    # Deleting a task record (clean-up) deletes its deliveries and their attempts with it.
    task_id: str = Field(
        sa_column=Column(String(36), ForeignKey("task_records.task_id", ondelete="CASCADE"), nullable=False, index=True)
    )
    user_id: Optional[int] = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    )
    event_type: str = Field(max_length=40)
    url: str = Field(max_length=2048)
    body: str
    status: str = Field(default="pending", max_length=10)
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    finished_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)
    last_status_code: Optional[int] = None
    last_error: Optional[str] = Field(default=None, max_length=500)


class WebhookAttempt(SQLModel, table=True):
    """One try of a delivery: when, how long, what the receiver answered (the delivery log)."""

    __tablename__ = "webhook_attempts"

    id: Optional[int] = Field(default=None, primary_key=True)
    delivery_id: int = Field(
        sa_column=Column(Integer, ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False, index=True),
    )
    attempt: int
    started_at: datetime = Field(sa_type=UTCDateTime)
    duration_ms: float
    status_code: Optional[int] = None
    error: Optional[str] = Field(default=None, max_length=500)


class Adapter(SQLModel, table=True):
    """A LoRA adapter in the catalogue: registered by an admin, named by requests."""

    __tablename__ = "lora_adapters"

    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True, index=True)
    # The model kind it applies to (text_to_image or image_edit)
    model: str = Field(max_length=20)
    # The model family it was trained for (models.profiles.ADAPTER_BASES): the 2512/2511 pair's
    # adapters ("qwen-image", every row from before the column) or Qwen-Image 2.1's
    base: str = Field(default=PAIR_ADAPTER_BASE, max_length=32, sa_column_kwargs={"server_default": PAIR_ADAPTER_BASE})
    # "hub": a Hugging Face repository id; "local": a path relative to LORA_DIR (uploads land there too)
    source_type: str = Field(max_length=10)
    source: str = Field(max_length=512)
    weight_name: Optional[str] = Field(default=None, max_length=255)
    default_scale: float = 1.0
    description: str = Field(default="", max_length=1000)
    trigger_words: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    size_bytes: Optional[int] = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    sha256: Optional[str] = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    created_by: Optional[int] = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    )


# ---------------------------------------------------------------- quota usage counters


class UsageCounter(SQLModel, table=True):
    """Images a user has used that count toward quotas, per period: what the quota check reads, so it
    costs the same at any history length. Kept in the transaction of each task-record change that
    moves usage (creation, a task failed or cancelled before it started, clean-up deleting records).

    ``period``: ``day`` (``start`` = local date, ``YYYY-MM-DD``), ``month`` (``YYYY-MM``) or ``total``
    (``start`` = ""); days and months in the time zone named in :class:`UsageCounterZone`.
    """

    __tablename__ = "usage_counters"

    user_id: int = Field(sa_column=Column(Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True))
    period: str = Field(primary_key=True, max_length=5)
    start: str = Field(primary_key=True, max_length=10)
    images: int = 0


class UsageCounterZone(SQLModel, table=True):
    """One row: the time zone whose days and months the counters are kept in (``QUOTA_TIMEZONE``);
    "" while the counters have not been built. A different zone rebuilds them from the records."""

    __tablename__ = "usage_counter_zone"

    id: int = Field(default=1, primary_key=True)
    zone: str = Field(default="", max_length=64)
