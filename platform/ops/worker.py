"""Start and stop a real Celery worker process (used by `manage.py demo` and tests).

The worker runs in its own process with the same environment as ours, so it
talks to the same database and broker; `DATABASE_URL` is passed explicitly so a
worker started under pytest reaches the test database.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent.parent


def worker_env(database_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["DATABASE_URL"] = database_url
    env["PYTHONPATH"] = os.pathsep.join([str(CHECKOUT), str(CHECKOUT / "platform")])
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    env.pop("CELERY_TASK_ALWAYS_EAGER", None)
    env.update(extra or {})
    return env


@contextmanager
def managed_process(cmd: list[str], env: dict[str, str], log_path: Path | None = None):
    """Yield a started child process (output to `log_path` or discarded); terminate it, then kill, on exit."""
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, cwd=CHECKOUT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()  # SIGTERM: Celery's warm shutdown, gunicorn's graceful stop
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log_path:
            out.close()


@contextmanager
def running_worker(database_url: str, *, queues: str = "default,attribution", concurrency: int = 1,
                   extra_env: dict[str, str] | None = None, log_path: Path | None = None):
    """Yield a started worker process; terminate it (warm shutdown) on exit."""
    cmd = [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queues,
           "--concurrency", str(concurrency), "--pool", "prefork" if concurrency > 1 else "solo",
           "--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    with managed_process(cmd, worker_env(database_url, extra_env), log_path) as proc:
        yield proc


def wait_result(async_result, *, timeout: float, proc: subprocess.Popen | None = None):
    """Wait for a task result, failing fast (with a clear error) if the worker died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if async_result.ready():
            return async_result.get(timeout=1)
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"Celery worker exited with code {proc.returncode} before the task finished")
        time.sleep(0.1)
    raise TimeoutError(f"task {async_result.id} did not finish within {timeout:.0f}s")
