"""Celery task behaviour: transient errors retry (then succeed), exhausted retries mark the generation failed.

A transient fault is injected at the engine boundary (the round loader) by
monkeypatching; everything else (database, engine, task machinery in eager
mode) is real.
"""

from __future__ import annotations

import pytest
from audits import engine
from audits.models import AttributionRun
from audits.services import Submission, generation_submit
from audits.tasks import AttributionTask, attribute_generation
from django.db import OperationalError
from registry.services import round_register_from_folder

pytestmark = pytest.mark.django_db


@pytest.fixture
def generation(federation, make_round, celery_test_db):
    engine.round_cache().clear()
    round_register_from_folder(federation=federation, folder=make_round())
    submission = Submission(prompt="The cat", response=" sat", chat_template=False)
    return generation_submit(federation=federation, submission=submission, enqueue=False)


def _flaky_loader(monkeypatch, failures: int) -> list[int]:
    calls = []
    real = engine.loaded_round

    def loaded_round(round_, config):
        calls.append(1)
        if len(calls) <= failures:
            raise OperationalError("server closed the connection unexpectedly")
        return real(round_, config)

    monkeypatch.setattr(engine, "loaded_round", loaded_round)
    return calls


def test_it_is_configured_for_late_acks_and_backoff():
    assert attribute_generation.acks_late and attribute_generation.reject_on_worker_lost
    assert OperationalError in attribute_generation.autoretry_for
    assert attribute_generation.retry_backoff and attribute_generation.max_retries == AttributionTask.max_retries == 5
    assert attribute_generation.name.startswith("audits.")  # routed to the attribution queue


def test_it_retries_a_transient_error_and_then_succeeds(generation, monkeypatch):
    calls = _flaky_loader(monkeypatch, failures=2)
    attribute_generation.apply(args=[generation.pk])
    generation.refresh_from_db()
    assert generation.status == "done"
    assert len(calls) == 3
    assert generation.attempts == 3
    assert AttributionRun.objects.filter(generation=generation).count() == 1


def test_it_marks_the_generation_failed_when_retries_run_out(generation, monkeypatch):
    calls = _flaky_loader(monkeypatch, failures=100)
    attribute_generation.apply(args=[generation.pk])
    generation.refresh_from_db()
    assert len(calls) == 1 + AttributionTask.max_retries
    assert generation.status == "failed"
    assert generation.failure_code == "retries_exhausted"
    assert "OperationalError: server closed the connection unexpectedly" in generation.failure_reason
