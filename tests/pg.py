"""A throw-away PostgreSQL server for test suites, started from Debian's server binaries.

``initdb`` into a temporary directory, ``pg_ctl start`` on a free loopback port with the unix
socket in that directory too, and ``pg_ctl stop`` at the end. PostgreSQL refuses to run as root,
so under root the server runs as the ``postgres`` system user (created by the Debian package) and
owns its directory. Durability is switched off (``fsync=off``): the data is thrown away anyway.

Missing binaries skip the tests that need the server, with the reason; with ``CI`` set they fail
instead, because CI installs PostgreSQL (``.ci/run``) and must never skip these suites silently.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Optional

import pytest

SERVER_BINARIES = "/usr/lib/postgresql/*/bin"
SUPERUSER = "postgres"


def find_server_bindir() -> Optional[Path]:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding ``initdb`` and ``pg_ctl``."""
    candidates = [Path(p).parent for p in glob.glob(f"{SERVER_BINARIES}/initdb")]
    candidates = [d for d in candidates if (d / "pg_ctl").exists()]
    if not candidates:
        found = shutil.which("initdb")
        return Path(found).parent if found and shutil.which("pg_ctl") else None
    return max(candidates, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)


def unavailable(reason: str) -> None:
    """Skip outside CI; fail in CI, where PostgreSQL is installed and the tests must run."""
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL tests skipped: {reason} (install it with `apt-get install postgresql`)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One running server; :meth:`create_schema` hands out empty schemas, one per test."""

    def __init__(self, bindir: Path, run_as: Optional[pwd.struct_passwd] = None):
        self.bindir = bindir
        self.port = _free_port()
        # Not under pytest's tmp dirs: those are private to root, and the server user must enter.
        self.root = Path(tempfile.mkdtemp(prefix="qwen-image-pg-"))
        self.datadir = self.root / "data"
        self.sockdir = self.root / "sock"
        self.sockdir.mkdir()
        self._run_as: list[str] = []
        if run_as is not None:
            for path in (self.root, self.sockdir):
                os.chown(path, run_as.pw_uid, run_as.pw_gid)
            self._run_as = ["runuser", "-u", run_as.pw_name, "--"]

    def _run(self, *args: str) -> None:
        result = subprocess.run([*self._run_as, *args], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")

    def start(self) -> PostgresServer:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.datadir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        )
        self._pg_ctl_start()
        return self

    def _pg_ctl_start(self) -> None:
        options = " ".join(
            [
                f"-p {self.port}",
                f"-k {self.sockdir}",
                "-c listen_addresses=127.0.0.1",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
            ]
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def pause(self) -> None:
        """Stop the server as an outage would (fast shutdown: every connection is cut), keeping its data."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start the server again after :meth:`pause`, on the same port with the same data."""
        self._pg_ctl_start()

    def halt(self) -> None:
        """Stop the server at once, as a crash or an outage would (its files stay; :meth:`stop` removes them)."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        try:
            if (self.datadir / "postmaster.pid").exists():
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, schema: Optional[str] = None) -> str:
        """A SQLAlchemy URL for the ``postgres`` database; with ``schema``, the only one searched."""
        url = f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/postgres"
        return f"{url}?options=-csearch_path%3D{schema}" if schema else url

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(sql)

    def create_schema(self) -> str:
        """A fresh, empty schema: as isolated as a new database for these tests, and ~100× faster
        to create (``CREATE DATABASE`` copies a template)."""
        name = "test_" + uuid.uuid4().hex[:12]
        self._admin(f'CREATE SCHEMA "{name}"')
        return name

    def drop_schema(self, name: str) -> None:
        self._admin(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def start_server() -> PostgresServer:
    """Start a server, or skip/fail (see :func:`unavailable`) when the binaries are missing."""
    bindir = find_server_bindir()
    if bindir is None:
        unavailable(f"no PostgreSQL server binaries (initdb, pg_ctl) under {SERVER_BINARIES} or on PATH")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("the psycopg driver is not installed (pip install 'psycopg[binary]')")
    run_as = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            run_as = pwd.getpwnam(SUPERUSER)
        except KeyError:
            unavailable(f"running as root needs the {SUPERUSER!r} system user to run the server as")
    server = PostgresServer(bindir, run_as)
    try:
        return server.start()
    except BaseException:
        server.stop()
        raise
