"""Audit reports: content numbers, a PDF that opens with the recorded page count and sha256, storage, integrity."""

from __future__ import annotations

import hashlib
import io
import re
from datetime import UTC, date, datetime

import pytest
from console.models import AuditReport
from console.periods import Period
from console.reports import render_pdf, report_content
from console.services import report_build, report_file_bytes
from console_data import attributed_generation, softmax
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.db import connection
from django.urls import reverse
from pypdf import PdfReader

from ledger import Finding, record_findings, session_on_connection

pytestmark = pytest.mark.django_db

WEEK = Period(date(2025, 3, 3), date(2025, 3, 9))


@pytest.fixture
def week_of_data(fed_a):
    """4 generations in the week (alice leads 3, bob 1) and 1 outside it."""
    tokens = [(" Paris", [3.0, 0.0, 0.0]), (" is", [0.0, 2.0, 0.0]), (" Paris", [2.5, 0.0, 0.1])]
    for day, leader in ((3, "alice"), (3, "alice"), (5, "alice"), (9, "bob")):
        shares = {"alice": 0.7, "bob": 0.2, "carol": 0.1} if leader == "alice" else {"alice": 0.2, "bob": 0.7, "carol": 0.1}
        attributed_generation(fed_a, shares=shares, tokens=tokens,
                              created_at=datetime(2025, 3, day, 23, 59, tzinfo=UTC))
    attributed_generation(fed_a, shares={"carol": 0.9, "alice": 0.05, "bob": 0.05}, tokens=tokens,
                          created_at=datetime(2025, 3, 10, 0, 0, tzinfo=UTC))  # the day after the period
    return fed_a


def _flag(federation_slug: str, client_id: str) -> None:
    connection.ensure_connection()
    session = session_on_connection(connection.connection)
    finding = Finding(client_id=client_id, method="share_outlier", score=4.2, p_value=0.001, q_value=0.004,
                      evidence={"generations": [1]})
    record_findings(session, federation=federation_slug, period="2025-W10", findings=[finding])
    session.flush()


def test_it_counts_the_period_exactly(week_of_data):
    content = report_content(federation=week_of_data, period=WEEK, generated_at=datetime(2025, 3, 10, tzinfo=UTC))
    assert content.totals["generations"] == 4 and content.totals["tokens"] == 12
    rows = {c["client_id"]: c for c in content.clients}
    assert rows["alice"]["mean_share"] == pytest.approx((0.7 * 3 + 0.2) / 4)
    assert rows["bob"]["mean_share"] == pytest.approx((0.2 * 3 + 0.7) / 4)
    assert rows["carol"]["mean_share"] == pytest.approx(0.1)
    assert (rows["alice"]["top1"], rows["bob"]["top1"], rows["carol"]["top1"]) == (3, 1, 0)
    assert [d["total"] for d in content.days] == [2, 0, 1, 0, 0, 0, 1]
    paris = (softmax([3.0, 0.0, 0.0])[0] + softmax([2.5, 0.0, 0.1])[0]) / 2
    assert content.top_tokens["alice"] == [{"text": " Paris", "count": 8, "mean_share": pytest.approx(paris)}]
    assert content.top_tokens["bob"] == [{"text": " is", "count": 4, "mean_share": pytest.approx(softmax([0.0, 2.0, 0.0])[1])}]
    assert "carol" not in content.top_tokens


def test_it_builds_a_pdf_that_opens_with_the_recorded_pages_and_hash(week_of_data):
    _flag("fed-a", "bob")
    report = report_build(federation=week_of_data, period=WEEK)
    pdf = storages["artifacts"].open(report.pdf_path, "rb").read()
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    assert hashlib.sha256(pdf).hexdigest() == report.pdf_sha256
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == report.pdf_pages == 5  # summary, share chart, client table, tokens, flags
    text = "\n".join(page.extract_text() for page in reader.pages)
    assert "Federation: Fed A (fed-a)" in text and "Generations: 4 (done 4)" in text
    assert "share_outlier" in text and "open" in text
    assert reader.metadata.title == "ProToken audit report: fed-a, 2025-03-03 to 2025-03-09"
    assert report.summary == {"generations": 4, "by_status": {"done": 4}, "attributed": 4, "tokens": 12, "rounds": [0],
                              "method_versions": ["protoken/1.0"], "clients": 3, "flags": 1, "leader": "alice"}


def test_it_writes_an_html_report_with_inline_charts(week_of_data):
    report = report_build(federation=week_of_data, period=WEEK)
    html = storages["artifacts"].open(report.html_path, "rb").read().decode()
    assert hashlib.sha256(html.encode()).hexdigest() == report.html_sha256
    assert html.count("<svg") == 3
    # Self-contained: nothing to fetch, nothing to run (xmlns URIs are names, not requests).
    assert not re.search(r"""(src|href)=["'](https?:)?//""", html) and "<script" not in html and "<link" not in html
    assert "Per-client shares" in html and "57.5%" in html and "32.5%" in html and "&quot; Paris&quot;" in html


def test_it_renders_the_same_content_to_the_same_bytes(week_of_data):
    content = report_content(federation=week_of_data, period=WEEK, generated_at=datetime(2025, 3, 10, tzinfo=UTC))
    assert render_pdf(content)[0] == render_pdf(content)[0]


def test_it_adds_a_version_when_a_period_is_built_again(week_of_data):
    first, second = report_build(federation=week_of_data, period=WEEK), report_build(federation=week_of_data, period=WEEK)
    assert (first.version, second.version) == (1, 2) and first.pdf_path != second.pdf_path
    assert storages["artifacts"].exists(first.pdf_path) and storages["artifacts"].exists(second.pdf_path)


def test_it_builds_an_empty_period_too(fed_b):
    report = report_build(federation=fed_b, period=Period(date(2020, 1, 1), date(2020, 1, 1)))
    reader = PdfReader(io.BytesIO(report_file_bytes(report=report, kind="pdf")))
    assert len(reader.pages) == report.pdf_pages
    assert report.summary["generations"] == 0 and report.summary["leader"] is None


def test_it_downloads_the_pdf_and_refuses_a_tampered_file(as_user, users, week_of_data):
    report = report_build(federation=week_of_data, period=WEEK)
    client = as_user(users["finance"])
    response = client.get(reverse("console:report-pdf", args=["fed-a", report.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == f'attachment; filename="{report.pdf_filename}"'
    assert hashlib.sha256(response.content).hexdigest() == report.pdf_sha256
    storage = storages["artifacts"]
    storage.delete(report.pdf_path)
    storage.save(report.pdf_path, ContentFile(b"%PDF-1.4 forged"))
    response = client.get(reverse("console:report-pdf", args=["fed-a", report.pk]))
    assert response.status_code == 409
    assert "the stored file was changed" in response.content.decode()


def test_it_serves_the_html_report_framed_and_sandboxed(as_user, users, week_of_data):
    report = report_build(federation=week_of_data, period=WEEK)
    client = as_user(users["auditor"])
    page = client.get(reverse("console:report", args=["fed-a", report.pk]))
    assert f'src="/f/fed-a/reports/{report.pk}/report.html"' in page.content.decode()
    html = client.get(reverse("console:report-html", args=["fed-a", report.pk]))
    assert html.status_code == 200 and html["X-Frame-Options"] == "SAMEORIGIN"
    assert html["Content-Security-Policy"].startswith("default-src 'none'")


def test_it_builds_from_the_console_form_and_lists_it(as_user, users, week_of_data):
    client = as_user(users["operator"])
    response = client.post(reverse("console:reports", args=["fed-a"]), {"start": "2025-03-03", "end": "2025-03-09"})
    report = AuditReport.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("console:report", args=["fed-a", report.pk])
    assert (report.trigger, report.created_by, report.pdf_pages) == ("console", users["operator"], 5)
    listing = client.get(reverse("console:reports", args=["fed-a"])).content.decode()
    assert "2025-03-03 to 2025-03-09" in listing and f"/f/fed-a/reports/{report.pk}/report.pdf" in listing


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"start": "2025-03-09", "end": "2025-03-03"}, "the end date 2025-03-03 is before the start date 2025-03-09"),
        ({"start": "03/03/2025", "end": "2025-03-09"}, "Enter a date as YYYY-MM-DD."),
        ({"end": "2025-03-09"}, "This field is required."),
        ({"start": "2020-01-01", "end": "2025-01-01"}, "a period may span at most 366 days"),
    ],
)
def test_it_refuses_a_bad_report_period_with_a_message(as_user, users, fed_a, body, message):
    response = as_user(users["operator"]).post(reverse("console:reports", args=["fed-a"]), body)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not AuditReport.objects.exists()


def test_it_hides_another_federations_report(as_user, users, fed_b):
    report = report_build(federation=fed_b, period=WEEK)
    client = as_user(users["operator"])
    assert client.get(reverse("console:report-pdf", args=["fed-a", report.pk])).status_code == 404
    assert client.get(reverse("console:report-pdf", args=["fed-b", report.pk])).status_code == 403
