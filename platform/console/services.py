"""Writes of the console: building and storing audit reports.

`report_build` renders the report (outside any transaction: it only reads),
writes the HTML and the PDF to `storages["artifacts"]` under a fresh name,
then inserts the `AuditReport` row under a lock on the federation row, which
serialises version numbers per federation. If the row cannot be written,
the files just written are deleted again, so nothing is half-written.

`report_build_scheduled` is what beat runs: it builds a period only when no
scheduled report of that period exists yet, so a redelivered task or a
second beat tick is a no-op.
"""

from __future__ import annotations

import hashlib
import uuid

from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from registry.models import Federation

from .access import ConsoleError
from .models import AuditReport
from .periods import Period
from .reports import render_html, render_pdf, report_content


def report_build(
    *, federation: Federation, period: Period, trigger: str = AuditReport.Trigger.COMMAND, user=None
) -> AuditReport:
    """Build, store and register a new version of the federation's report for `period`."""
    content = report_content(federation=federation, period=period, generated_at=timezone.now())
    html = render_html(content).encode("utf-8")
    pdf, pages = render_pdf(content)
    paths = _store_files(federation, period, html=html, pdf=pdf)
    try:
        with transaction.atomic():
            Federation.objects.select_for_update().filter(pk=federation.pk).first()
            return AuditReport.objects.create(
                federation=federation,
                period_start=period.start,
                period_end=period.end,
                version=_next_version(federation, period),
                trigger=trigger,
                created_by=user,
                html_path=paths["html"],
                pdf_path=paths["pdf"],
                html_sha256=hashlib.sha256(html).hexdigest(),
                pdf_sha256=hashlib.sha256(pdf).hexdigest(),
                pdf_pages=pages,
                summary=content.summary(),
            )
    except BaseException:
        _delete_files(paths)
        raise


def report_build_scheduled(*, federation: Federation, period: Period) -> AuditReport:
    existing = (
        AuditReport.objects.filter(
            federation=federation, period_start=period.start, period_end=period.end, trigger=AuditReport.Trigger.SCHEDULE
        )
        .order_by("-version")
        .first()
    )
    if existing is not None:
        return existing
    return report_build(federation=federation, period=period, trigger=AuditReport.Trigger.SCHEDULE)


def _next_version(federation: Federation, period: Period) -> int:
    latest = AuditReport.objects.filter(
        federation=federation, period_start=period.start, period_end=period.end
    ).aggregate(v=Max("version"))["v"]
    return (latest or 0) + 1


def _store_files(federation: Federation, period: Period, *, html: bytes, pdf: bytes) -> dict[str, str]:
    storage = storages["artifacts"]
    folder = f"reports/{federation.slug}/{period.start.isoformat()}_{period.end.isoformat()}/{uuid.uuid4().hex}"
    paths: dict[str, str] = {}
    try:
        paths["html"] = storage.save(f"{folder}/report.html", ContentFile(html))
        paths["pdf"] = storage.save(f"{folder}/report.pdf", ContentFile(pdf))
    except BaseException:
        _delete_files(paths)
        raise
    return paths


def _delete_files(paths: dict[str, str]) -> None:
    storage = storages["artifacts"]
    for name in paths.values():
        storage.delete(name)


class ReportIntegrityError(ConsoleError):
    """A stored report file no longer matches the sha256 recorded when it was built."""

    status = 409


def report_file_bytes(*, report: AuditReport, kind: str) -> bytes:
    """The stored PDF or HTML, checked against its recorded sha256."""
    name, expected = (report.pdf_path, report.pdf_sha256) if kind == "pdf" else (report.html_path, report.html_sha256)
    with storages["artifacts"].open(name, "rb") as handle:
        data = handle.read()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ReportIntegrityError(
            f"report {report.pk} {kind} file {name!r} has sha256 {actual}, but {expected} was recorded when it was "
            "built: the stored file was changed; rebuild the report"
        )
    return data
