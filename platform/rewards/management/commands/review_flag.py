"""`manage.py review_flag --federation F (--list [--state open] | --flag ID --state confirmed|dismissed|open)`."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from rewards.selectors import flag_list
from rewards.services import FLAG_STATES, flag_review

from ._common import federation_arg, platform_errors


class Command(BaseCommand):
    help = "List a federation's screening flags, or move one to confirmed / dismissed / open."

    def add_arguments(self, parser):
        parser.add_argument("--federation", required=True, help="federation slug")
        parser.add_argument("--list", action="store_true", help="list flags (filtered by --state if given)")
        parser.add_argument("--flag", type=int, help="ledger flag id")
        parser.add_argument("--state", choices=FLAG_STATES)
        parser.add_argument("--actor", default="manage.py")
        parser.add_argument("--note", default="")

    def handle(self, *args, **options):
        federation = federation_arg(options["federation"])
        if options["list"]:
            return self._list(federation, options["state"])
        if options["flag"] is None or options["state"] is None:
            raise CommandError("give --flag ID and --state, or --list")
        with platform_errors():
            review = flag_review(federation=federation, flag_id=options["flag"], state=options["state"],
                                 actor=options["actor"], note=options["note"])
        flag = review.flag
        change = f"{review.previous_state} -> {flag.state}" if review.changed else f"already {flag.state}"
        released = f"; released held payouts in ledger seq {[r.seq for r in review.released]}" \
            if review.released else ""
        self.stdout.write(f"flag {flag.id} on {flag.client_id} ({flag.method}): {change}{released}")

    def _list(self, federation, state) -> None:
        with platform_errors():
            flags = flag_list(federation=federation, state=state)
        for flag in flags:
            self.stdout.write(f"{flag.id}\t{flag.state}\t{flag.client_id}\t{flag.period}\t{flag.method}\t"
                              f"score={flag.score:.3g}\tq={flag.q_value}")
        self.stdout.write(f"{len(flags)} flags")
