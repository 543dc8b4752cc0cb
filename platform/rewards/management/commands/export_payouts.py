"""`manage.py export_payouts --federation F (--settlement ID | --start D --end D --currency EUR) [--out DIR]`.

Exports (or re-exports, byte-identically) the payout run of a settled period
into the artifact storage; ``--out`` also writes copies of both files there.
"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from rewards.periods import Period, parse_instant
from rewards.selectors import settlement_for_period, settlement_get
from rewards.services import payout_export, payout_file

from ._common import federation_arg, platform_errors


class Command(BaseCommand):
    help = "Export a settled period's payouts (CSV + JSON with SHA-256s) to the artifact storage."

    def add_arguments(self, parser):
        parser.add_argument("--federation", required=True, help="federation slug")
        parser.add_argument("--settlement", type=int, help="settlement id")
        parser.add_argument("--start", help="period start (with --end and --currency instead of --settlement)")
        parser.add_argument("--end")
        parser.add_argument("--currency")
        parser.add_argument("--out", type=Path, help="also write the two files into this folder")
        parser.add_argument("--actor", default="manage.py")

    def handle(self, *args, **options):
        federation = federation_arg(options["federation"])
        with platform_errors():
            settlement = self._settlement(federation, options)
            result = payout_export(settlement=settlement, actor=options["actor"])
            files = [payout_file(export=result.export, fmt=fmt) for fmt in ("csv", "json")]
        export = result.export
        verb = "already exported; identical files" if result.replayed else "exported"
        self.stdout.write(f"{federation.slug} {export.period} {export.currency}: {verb} (export {export.pk}), "
                          f"{export.lines_count} payees, total {export.total_amount}")
        for stored in files:
            self.stdout.write(f"  {stored.name}  sha256 {stored.sha256}")
            if options["out"] is not None:
                options["out"].mkdir(parents=True, exist_ok=True)
                (options["out"] / stored.name).write_bytes(stored.content)

    def _settlement(self, federation, options):
        if options["settlement"] is not None:
            return settlement_get(federation=federation, settlement_id=options["settlement"])
        if not (options["start"] and options["end"] and options["currency"]):
            raise CommandError("give --settlement ID, or --start, --end and --currency")
        period = Period(parse_instant(options["start"], "start"), parse_instant(options["end"], "end"))
        return settlement_for_period(federation=federation, period=period, currency=options["currency"])
