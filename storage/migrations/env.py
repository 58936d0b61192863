"""Alembic environment: compares against ``storage.tables`` and runs on the connection it is given.

At start-up ``storage.db.init_db`` passes an open connection (already holding the schema lock) in
``config.attributes["connection"]``. From the command line the database is ``-x url=…``, else the
``DATABASE_URL`` environment variable, else the service's default SQLite file under ``DATA_DIR``.
"""

from __future__ import annotations

import os
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import AutoString

from storage import tables
from storage.db import make_engine, sqlite_url

config = context.config
target_metadata = SQLModel.metadata


def render_item(type_: str, obj: Any, autogen_context: Any) -> Any:
    """Write the application's column types as plain SQLAlchemy types, so a revision keeps
    meaning what it meant even after ``storage.tables`` changes or renames them."""
    if type_ == "type":
        if isinstance(obj, tables.UTCDateTime):
            return "sa.DateTime()"
        if isinstance(obj, AutoString):
            return f"sa.String(length={obj.length})" if obj.length else "sa.String()"
    return False  # alembic's default rendering


def database_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get("DATABASE_URL")
    return url or sqlite_url(os.environ.get("DATA_DIR", "data"))


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_item=render_item,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run them against a database")

given = config.attributes.get("connection")
if given is not None:
    run(given)
else:
    engine = make_engine(database_url())
    try:
        with engine.connect() as connection:
            run(connection)
    finally:
        engine.dispose()
