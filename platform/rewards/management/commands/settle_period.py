"""`manage.py settle_period --federation F --start 2026-12-01 --end 2026-12-02 --pool 100000 --currency EUR`.

Screens and allocates one period in one transaction (`rewards.services.period_settle`);
re-running a settled period prints the stored settlement and writes nothing.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand

from rewards.models import BASES
from rewards.periods import parse_instant
from rewards.rules import SettlementRules
from rewards.services import period_settle

from ._common import federation_arg, platform_errors


class Command(BaseCommand):
    help = "Screen a federation's period and post its reward allocation (ledger + Django, one transaction)."

    def add_arguments(self, parser):
        parser.add_argument("--federation", required=True, help="federation slug")
        parser.add_argument("--start", required=True, help="period start, ISO date or datetime (UTC if naive)")
        parser.add_argument("--end", required=True, help="period end (exclusive)")
        parser.add_argument("--pool", required=True, type=int, help="amount to distribute, in minor units")
        parser.add_argument("--currency", required=True, help="e.g. EUR")
        parser.add_argument("--basis", default="sequence_share", choices=BASES)
        parser.add_argument("--rules", default="{}", help="JSON object of SettlementRules fields")
        parser.add_argument("--actor", default="manage.py")

    def handle(self, *args, **options):
        federation = federation_arg(options["federation"])
        with platform_errors():
            result = period_settle(
                federation=federation, period_start=parse_instant(options["start"], "start"),
                period_end=parse_instant(options["end"], "end"), pool_amount=options["pool"],
                currency=options["currency"], basis=options["basis"], rules=_rules(options["rules"]),
                actor=options["actor"])
        s = result.settlement
        verb = "already settled" if result.replayed else s.status
        self.stdout.write(f"{federation.slug} {s.period} {s.currency}: {verb} (settlement {s.pk})")
        self.stdout.write(f"  allocated {s.allocated_amount} of {s.pool_amount} to {s.clients_paid} clients, "
                          f"held {s.held_amount} for {s.clients_held}, retained {s.retained_amount}")
        self.stdout.write(f"  {s.generations_count} generations ({s.harmful_count} harmful), {s.rounds_count} "
                          f"rounds screened, {s.flags_count} flags {s.flag_ids}; ledger seq {s.ledger_seq}")


def _rules(text: str) -> SettlementRules:
    from registry.errors import InvalidInput

    with platform_errors():
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput("invalid_rules", f"--rules must be a JSON object: {exc.msg}", field="rules") from None
        if not isinstance(data, dict):
            raise InvalidInput("invalid_rules", "--rules must be a JSON object", field="rules")
        return SettlementRules.from_dict(data)
