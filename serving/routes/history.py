"""History, statistics and quotas (contract § 5.5–5.10), computed in SQL."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Optional

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field, computed_field
from sqlmodel import Session

from auth.deps import AdminUser, CurrentUser, SessionDep
from auth.routes import MAX_DB_INT, UserId
from auth.schemas import QuotaLimits
from i18n import messages
from models.kinds import TaskType
from serving.protocol import image_urls
from serving.routes.common import owned_record
from serving.state import ServiceState, StateDep
from storage import TaskRecord, TaskStatus, utcnow
from storage.tables import User
from storage.tasks import HistoryFilter, current_usage, effective_limits, history_page, quota_periods, statistics
from storage.users import get_user

router = APIRouter(tags=["history"])


class TaskRecordPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    task_id: str
    user_id: Optional[int]
    task_type: str
    prompt: str
    negative_prompt: Optional[str]
    parameters: dict[str, Any]
    status: str
    result_path: Optional[str]
    result_filename: Optional[str]
    error_message: Optional[str]
    created_at: datetime
    started_at: Optional[datetime]
    completed_at: Optional[datetime]
    execution_time: Optional[float]
    seed: Optional[int] = None
    image_count: int = 1
    attempts: int = 0

    # Read from the record, not shown: the inputs' storage keys (``input_urls`` shows them as URLs).
    input_keys: list[str] = Field(default_factory=list, exclude=True)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def input_urls(self) -> list[str]:
        """Beyond the contract: the images the task was sent, as uploaded, in order (an inpainting's
        mask last): ``GET /tasks/{id}/inputs/{n}``."""
        return [f"/tasks/{self.task_id}/inputs/{n}" for n in range(len(self.input_keys))]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def image_urls(self) -> Optional[list[str]]:
        """Beyond the contract: one URL per image of a completed task (``GET /tasks/{id}/images/{n}``)."""
        return image_urls(self.task_id, self.image_count) if self.status == TaskStatus.completed.value else None


class HistoryPage(BaseModel):
    items: list[TaskRecordPublic]
    total: int
    page: int
    page_size: int
    total_pages: int


def _aware(value: Optional[datetime]) -> Optional[datetime]:
    """Naive datetimes in filters are read as UTC; an instant past the calendar's ends is clamped to it.

    ``9999-12-31T23:00:00-14:00`` is year 10000 in UTC, which ``datetime`` cannot hold.
    """
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        edge = datetime.max if value.year > 1 else datetime.min
        return edge.replace(tzinfo=timezone.utc)


def _page(session, f: HistoryFilter, page: int, page_size: int) -> HistoryPage:
    result = history_page(session, f, page, page_size)
    return HistoryPage(
        items=[TaskRecordPublic.model_validate(r) for r in result.items],
        total=result.total,
        page=result.page,
        page_size=result.page_size,
        total_pages=result.total_pages,
    )


Page = Annotated[int, Query(ge=1, le=1_000_000)]
PageSize = Annotated[int, Query(ge=1, le=100)]
StatusFilter = Annotated[Optional[TaskStatus], Query(alias="status")]
# The task types the model kinds run (models.kinds), under the name the schema has always used.
TypeFilter = Annotated[Optional[TaskType], Query()]
DateFilter = Annotated[Optional[datetime], Query(description="ISO 8601; without a zone it is UTC")]


@router.get("/tasks/history/me", response_model=HistoryPage)
def my_history(
    user: CurrentUser,
    session: SessionDep,
    page: Page = 1,
    page_size: PageSize = 20,
    status_: StatusFilter = None,
    task_type: TypeFilter = None,
    start_date: DateFilter = None,
    end_date: DateFilter = None,
) -> HistoryPage:
    """The caller's tasks, newest first."""
    f = HistoryFilter(
        user.id, status_ and status_.value, task_type and task_type.value, _aware(start_date), _aware(end_date)
    )
    return _page(session, f, page, page_size)


@router.get("/tasks/history/all", response_model=HistoryPage)
def all_history(
    _: AdminUser,
    session: SessionDep,
    page: Page = 1,
    page_size: PageSize = 20,
    status_: StatusFilter = None,
    task_type: TypeFilter = None,
    start_date: DateFilter = None,
    end_date: DateFilter = None,
    user_id: Annotated[Optional[int], Query(ge=1, le=MAX_DB_INT)] = None,
) -> HistoryPage:
    """Every user's tasks (admin), optionally one user's."""
    f = HistoryFilter(
        user_id, status_ and status_.value, task_type and task_type.value, _aware(start_date), _aware(end_date)
    )
    return _page(session, f, page, page_size)


@router.get("/tasks/history/{task_id}", response_model=TaskRecordPublic)
def task_history(task_id: str, user: CurrentUser, session: SessionDep) -> TaskRecord:
    """The full record of one task (owner or admin)."""
    return owned_record(session, user, task_id)


@router.get("/tasks/statistics/me")
def my_statistics(user: CurrentUser, session: SessionDep) -> dict:
    return statistics(session, user.id)


@router.get("/tasks/statistics/global")
def global_statistics(_: AdminUser, session: SessionDep, state: StateDep) -> dict:
    periods = quota_periods(utcnow(), state.settings.quota_timezone)
    return statistics(session, None, today_start=periods.day_start)


def quota_body(session: Session, user: User, state: ServiceState) -> dict:
    assert user.id is not None  # a user row read from the database has its id
    daily, monthly = effective_limits(user, state.settings.default_daily_limit, state.settings.default_monthly_limit)
    now = utcnow()
    periods = quota_periods(now, state.settings.quota_timezone)
    usage = current_usage(session, user.id, now, state.settings.quota_timezone)
    return {
        "user_id": user.id,
        "daily_limit": daily,
        "monthly_limit": monthly,
        "used_today": usage.used_today,
        "used_this_month": usage.used_this_month,
        "total_used": usage.total_used,
        "remaining_today": max(daily - usage.used_today, 0),
        "remaining_this_month": max(monthly - usage.used_this_month, 0),
        "daily_resets_at": periods.day_end,
        "monthly_resets_at": periods.month_end,
        "timezone": state.settings.quota_timezone,
        # The service's defaults, which apply where the user has no limit of their own.
        "default_daily_limit": state.settings.default_daily_limit,
        "default_monthly_limit": state.settings.default_monthly_limit,
    }


@router.get("/tasks/quota/me")
def my_quota(user: CurrentUser, session: SessionDep, state: StateDep) -> dict:
    """Limits, usage and what remains today and this month (in the configured time zone)."""
    return quota_body(session, user, state)


def _user_or_404(session, user_id: int) -> User:
    user = get_user(session, user_id)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, messages.USER_NOT_FOUND)
    return user


@router.get("/auth/users/{user_id}/quota", tags=["auth"])
def read_user_quota(user_id: UserId, _: AdminUser, session: SessionDep, state: StateDep) -> dict:
    """A user's limits and usage (admin)."""
    return quota_body(session, _user_or_404(session, user_id), state)


@router.put("/auth/users/{user_id}/quota", tags=["auth"])
def set_user_quota(user_id: UserId, body: QuotaLimits, _: AdminUser, session: SessionDep, state: StateDep) -> dict:
    """Set a user's limits (admin); ``null`` restores the service default."""
    user = _user_or_404(session, user_id)
    if "daily_limit" in body.model_fields_set:
        user.daily_limit = body.daily_limit
    if "monthly_limit" in body.model_fields_set:
        user.monthly_limit = body.monthly_limit
    session.add(user)
    session.commit()
    return quota_body(session, user, state)
