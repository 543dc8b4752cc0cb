"""A real Celery worker process runs a task on the default (server-less) broker."""

import pytest
from ops.tasks import worker_selfcheck
from ops.worker import running_worker, wait_result


@pytest.mark.django_db(transaction=True)
def test_it_runs_a_task_in_a_real_worker_process(celery_test_db, tmp_path):
    import os

    with running_worker(celery_test_db, log_path=tmp_path / "worker.log") as proc:
        reply = wait_result(worker_selfcheck.delay(), timeout=120, proc=proc)
    assert reply["worker_pid"] != os.getpid()
    assert reply["database"].startswith("test_")
    assert reply["ledger_migrated"] is True


def test_it_runs_the_task_eagerly_in_unit_tests(celery_test_db, db):
    reply = worker_selfcheck.apply().get()
    assert reply["ledger_migrated"] is True
