"""Report jobs: the `build_report` command, the Celery task and the weekly beat fan-out."""

from __future__ import annotations

import io

import pytest
from config.celery import app
from console.models import AuditReport
from console.tasks import build_period_reports, build_report
from django.conf import settings
from django.core.management import CommandError, call_command

pytestmark = pytest.mark.django_db


@pytest.fixture
def eager():
    """Run `.delay()` in-process, as a worker would, with results kept in memory, for the duration of a test."""
    saved = app.conf.task_always_eager, app.conf.result_backend
    app.conf.task_always_eager, app.conf.result_backend = True, "cache+memory://"
    app._local.__dict__.pop("backend", None)  # the app caches its backend per thread
    yield
    app.conf.task_always_eager, app.conf.result_backend = saved
    app._local.__dict__.pop("backend", None)


def test_the_command_builds_a_report(fed_a):
    out = io.StringIO()
    call_command("build_report", "--federation", "fed-a", "--start", "2025-03-03", "--end", "2025-03-09", stdout=out)
    report = AuditReport.objects.get()
    assert (str(report.period_start), str(report.period_end), report.trigger) == ("2025-03-03", "2025-03-09", "command")
    assert f"pdf sha256 {report.pdf_sha256}" in out.getvalue()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--federation", "nope", "--start", "2025-03-03", "--end", "2025-03-09"], "there is no federation 'nope'"),
        (["--federation", "fed-a", "--start", "2025-3-3x", "--end", "2025-03-09"],
         "start must be a date as YYYY-MM-DD, got '2025-3-3x'"),
        (["--federation", "fed-a", "--start", "2025-03-09", "--end", "2025-03-03"],
         "the end date 2025-03-03 is before the start date 2025-03-09"),
    ],
)
def test_the_command_refuses_bad_arguments_by_name(fed_a, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("build_report", *args)
    assert not AuditReport.objects.exists()


def test_the_task_builds_a_scheduled_report_once(fed_a):
    first = build_report(fed_a.pk, "2025-03-03", "2025-03-09")
    again = build_report(fed_a.pk, "2025-03-03", "2025-03-09")  # a redelivered task
    assert first == again and AuditReport.objects.get().trigger == "schedule"


def test_beat_builds_the_previous_period_for_every_federation(fed_a, fed_b, eager):
    assert settings.CELERY_BEAT_SCHEDULE["console-period-reports"]["task"] == "console.build_period_reports"
    assert build_period_reports("2025-03-10") == [fed_a.pk, fed_b.pk]  # a Monday: the week before is Mon 3..Sun 9
    periods = sorted(AuditReport.objects.values_list("federation__slug", "period_start", "period_end"))
    assert [(slug, str(s), str(e)) for slug, s, e in periods] == [
        ("fed-a", "2025-03-03", "2025-03-09"), ("fed-b", "2025-03-03", "2025-03-09"),
    ]
