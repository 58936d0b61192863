"""Alembic schema migrations of the service's database (run at start-up by ``storage.db.init_db``)."""
