"""``GET /tasks/{id}`` in one plain uvicorn + FastAPI process: the v1.3.0 service's design.

The comparison point for the status-poll figure. It reads the same SQLite database as the
service (the task record and the user, through SQLModel), checks the bearer token exactly as
the service does (``AuthService.user_for_token``: signature, expiry, user active, token
version) and answers with the same body as the service answers for a task the registry no
longer holds (``status_from_record``). No Ray, no proxy, no actor hop.

    python -m benchmarks.plain_server --data-dir DIR --port 8123
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Annotated, Optional

from fastapi import Depends, FastAPI, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from auth.security import load_or_create_secret
from auth.service import AuthConfig, AuthError, AuthService
from serving.protocol import TaskStatusView
from serving.routes.tasks import status_from_record
from storage import init_db, make_engine
from storage.db import sqlite_url
from storage.tasks import get_task_record

_bearer = HTTPBearer(auto_error=False)


def create_app(data_dir: Path) -> FastAPI:
    engine = make_engine(sqlite_url(data_dir))
    init_db(engine)
    auth = AuthService(engine, load_or_create_secret(data_dir), AuthConfig(hash_profile="cheapest"))
    app = FastAPI(title="plain status server")

    @app.get("/ping")
    def ping() -> dict:
        return {"ok": True}

    @app.get("/tasks/{task_id}")
    def get_task(
        task_id: str, credentials: Annotated[Optional[HTTPAuthorizationCredentials], Depends(_bearer)]
    ) -> TaskStatusView:
        if credentials is None:
            raise HTTPException(401, "无效的认证凭据", headers={"WWW-Authenticate": "Bearer"})
        with Session(engine, expire_on_commit=False) as session:
            try:
                user = auth.user_for_token(session, credentials.credentials)
            except AuthError:
                raise HTTPException(401, "无效的认证凭据", headers={"WWW-Authenticate": "Bearer"}) from None
            record = get_task_record(session, task_id, None if user.is_admin else user.id)
            if record is None:
                raise HTTPException(404, "任务不存在")
            return status_from_record(record)

    return app


def main(argv: Optional[list[str]] = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m benchmarks.plain_server", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="the service's DATA_DIR (database, JWT secret)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    uvicorn.run(
        create_app(args.data_dir.resolve()), host=args.host, port=args.port, log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()
