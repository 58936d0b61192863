"""``python -m serving``: start Ray and the application in the foreground (what ``make run`` does).

Listens on HOST:PORT (127.0.0.1:8000 by default), keeps data under DATA_DIR (./data), runs the
tiny profile on CPU unless MODEL_PROFILE says otherwise; every one is a setting of
:mod:`serving.settings`. Ctrl-C (or SIGTERM) shuts Serve and Ray down cleanly.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading

APP_NAME = "qwen-image"


def main() -> None:
    from serving.settings import load_settings

    settings = load_settings()
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument(
        "--num-gpus", type=float, default=settings.num_gpus, help="GPUs Ray may use (0: the tiny profile on CPU)"
    )
    options = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    from serving.proxy import configure_environment

    configure_environment()  # read by Serve's proxy when Ray starts it

    import ray
    from ray import serve

    from serving.app import build_app

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    ray.init(include_dashboard=False, num_gpus=options.num_gpus, logging_level=logging.WARNING)
    try:
        serve.start(http_options={"host": options.host, "port": options.port, "request_timeout_s": 900})
        # On CPU one replica per model: more would only share the same cores.
        shape = {} if options.num_gpus else {"model_num_gpus": 0, "model_replicas": 1}
        serve.run(build_app(shape), name=APP_NAME, route_prefix="/", blocking=False)
        print(
            f"\nQwen Image Service is up on http://{options.host}:{options.port} "
            f"(profile {settings.model_profile}, data in {settings.data_dir}). Ctrl-C stops it.\n",
            flush=True,
        )
        stop.wait()
    finally:
        print("shutting down…", flush=True)
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            checkpoint_sqlite()


def checkpoint_sqlite() -> None:
    """Fold SQLite's write-ahead log back into the database file once every process is gone,
    so the .db file alone is a complete copy (backups, moves)."""
    from serving.settings import load_settings

    settings = load_settings()
    if settings.database_url is not None:
        return
    import sqlite3

    from storage.db import sqlite_url

    path = sqlite_url(settings.data_dir).removeprefix("sqlite:///")
    if os.path.exists(path):
        with sqlite3.connect(path) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")


if __name__ == "__main__":
    main()
