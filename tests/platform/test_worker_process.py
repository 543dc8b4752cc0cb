"""A real Celery worker process attributes API submissions: every accepted generation is done exactly once.

The worker runs as `celery -A config worker -Q attribution,default --pool solo`
against the pytest-django test database, with the default broker (kombu's
SQLAlchemy transport) on that same database, so this exercises the whole
path: API → on_commit → broker → worker → engine → one stored transaction.
"""

from __future__ import annotations

import time

import pytest
from audits.models import AttributionRun, Generation
from conftest import tar_gz

WAIT_S = 240  # a bound for the whole test, not a performance assertion


def _wait_until_finished(ids: list[int], proc) -> list[Generation]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        rows = list(Generation.objects.filter(pk__in=ids).order_by("pk"))
        if all(g.status in ("done", "failed") for g in rows):
            return rows
        assert proc.poll() is None, "the worker process exited"
        time.sleep(0.5)
    raise AssertionError(f"generations still unfinished after {WAIT_S}s: {[(g.pk, g.status) for g in rows]}")


@pytest.mark.django_db(transaction=True)
def test_it_attributes_submissions_in_a_real_worker(worker, federation, make_round, make_api, issue_token, tmp_path):
    api = make_api(issue_token(federation))
    assert api.upload("/rounds/upload", tar_gz(make_round())).status_code == 201
    single = [api.post("/generations", {"prompt": f"Q{i}", "response": f" answer {i}", "chat_template": False})
              for i in range(3)]
    batch = api.post("/generations/batch", {"items": [{"prompt": "B1", "response": " x", "chat_template": False},
                                                      {"prompt": "B2", "max_new_tokens": 4, "chat_template": False}]})
    bad = api.post("/generations", {"prompt": "x" * 300, "response": " y", "chat_template": False})
    ids = [r.json()["id"] for r in single] + [g["id"] for g in batch.json()["generations"]] + [bad.json()["id"]]
    rows = _wait_until_finished(ids, worker)
    log = (tmp_path / "worker.log").read_text()
    assert [g.status for g in rows] == ["done"] * 5 + ["failed"], log[-3000:]
    assert rows[-1].failure_code == "invalid_input" and "256" in rows[-1].failure_reason
    for g in rows[:5]:
        assert AttributionRun.objects.filter(generation=g).count() == 1
        assert g.attempts == 1
        assert g.started_at <= g.finished_at
    body = api.get(f"/generations/{ids[0]}").json()
    assert body["status"] == "done"
    assert sum(c["share"] for c in body["attribution"]["clients"]) == pytest.approx(1.0)
    assert "".join(t["text"] for t in body["attribution"]["tokens"]) == " answer 0"
