"""Start and stop a real gunicorn web server on a free loopback port (demo, benchmarks)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from ops.worker import managed_process, worker_env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_web(database_url: str, *, workers: int = 2, log_path: Path | None = None,
                startup_timeout: float = 60.0):
    """Yield the base URL of a started gunicorn; stop it on exit."""
    port = free_port()
    cmd = [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{port}",
           "--workers", str(workers), "--timeout", "300", "--log-level", "warning"]
    base_url = f"http://127.0.0.1:{port}"
    with managed_process(cmd, worker_env(database_url), log_path) as proc:
        _wait_healthy(base_url, proc, startup_timeout)
        yield base_url


def _wait_healthy(base_url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with code {proc.returncode} during start-up")
        try:
            with urllib.request.urlopen(base_url + "/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise TimeoutError(f"gunicorn at {base_url} was not healthy within {timeout:.0f}s")
