"""`manage.py build_report --federation SLUG --start YYYY-MM-DD --end YYYY-MM-DD`: build one audit report now."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from registry.models import Federation

from console.access import ConsoleError
from console.models import AuditReport
from console.periods import Period
from console.services import report_build


class Command(BaseCommand):
    help = "Build an audit report (HTML + PDF) of one federation over an inclusive date period (UTC)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--federation", required=True, help="federation slug")
        parser.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
        parser.add_argument("--end", required=True, help="last day (inclusive), YYYY-MM-DD")

    def handle(self, *args, federation: str, start: str, end: str, **options) -> None:
        try:
            period = Period.parse(start, end)
        except ConsoleError as exc:
            raise CommandError(exc.message) from None
        fed = Federation.objects.filter(slug=federation).first()
        if fed is None:
            raise CommandError(f"there is no federation {federation!r}")
        report = report_build(federation=fed, period=period, trigger=AuditReport.Trigger.COMMAND)
        self.stdout.write(
            f"report {report.pk} v{report.version} for {fed.slug} {period}: {report.pdf_pages} PDF pages, "
            f"pdf sha256 {report.pdf_sha256}\n  html: {report.html_path}\n  pdf:  {report.pdf_path}"
        )
