"""`manage.py demo`: the main job end to end on whatever the environment provides.

With nothing configured this uses the embedded Postgres and the broker on it.
The steps are the product's real path, in order:

1. the shipped SmolLM2 is converted once into its dense cache folder;
2. both schemas are migrated (Django apps, then the ledger's alembic);
3. a small backdoor federation is trained through Flower on that model and
   every round is recorded as a `protoken-round/1` folder (`federated.demo`);
4. a gunicorn server and a real Celery worker start; the rounds are uploaded
   through `POST /api/v1/rounds/upload` and the held-out prompts submitted
   through `POST /api/v1/generations/batch`; the worker generates and
   attributes each one (`audits.demo.run_demo`);
5. the period is settled: a harm policy on the backdoor's sentinel marks the
   harmful responses, screening flags the clients they concentrate on, and the
   reward pool is allocated through the ledger (`rewards.services.period_settle`).

Every figure it prints is read back from what it just ran: predictions and
shares from the database, flags and balances from the ledger, and the ground
truth from the simulation's `cases.jsonl`. Nothing is precomputed.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from ops.management.commands.migrate_all import database_url_for_connection
from ops.tasks import worker_selfcheck
from ops.web import running_web
from ops.worker import running_worker, wait_result

POOL = 1_000_000  # minor units (10,000.00 EUR) for the demo period


class Command(BaseCommand):
    help = "Run the main job end to end on embedded defaults: federation -> API -> worker -> attribution -> rewards."

    def add_arguments(self, parser):
        parser.add_argument("--out", type=Path, default=None, help="folder for the simulated rounds (default var/demo/<time>)")
        from federated import demo

        parser.add_argument("--clients", type=int, default=demo.CLIENTS)
        parser.add_argument("--malicious", type=int, default=demo.MALICIOUS)
        parser.add_argument("--rounds", type=int, default=demo.ROUNDS)
        parser.add_argument("--cases", type=int, default=6, help="held-out prompts submitted through the API")

    def handle(self, *args, **options):
        started = time.monotonic()
        if options["malicious"] >= options["clients"] or options["clients"] < 2 or options["cases"] < 1:
            raise CommandError("need clients >= 2, 1 <= malicious < clients and cases >= 1")
        self.step("Shipped model", self.prepare_model)
        self.step("Database", lambda: call_command("migrate_all", verbosity=0) or "Django apps + ledger schema migrated")
        out = options["out"] or Path(settings.VAR_DIR) / "demo" / timezone.now().strftime("%Y%m%d-%H%M%S")
        fed = self.step("Federated training (Flower)", lambda: self.federate(out, options))
        database_url = database_url_for_connection()
        log_dir = out / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        with running_worker(database_url, log_path=log_dir / "worker.log") as worker, \
                running_web(database_url, log_path=log_dir / "web.log") as base_url:
            self.step("Worker", lambda: self.check_worker(worker))
            summary = self.step(f"API + worker at {base_url}", lambda: self.pipeline(base_url, fed))
        self.report_attribution(fed, summary)
        self.step("Rewards and screening", lambda: self.settle(fed, summary))
        self.stdout.write(self.style.SUCCESS(f"demo finished in {time.monotonic() - started:.1f}s; rounds in {out}"))

    def step(self, title: str, fn):
        t0 = time.monotonic()
        self.stdout.write(f"== {title} ...")
        value = fn()
        text = value if isinstance(value, str) else getattr(value, "line", "done")
        self.stdout.write(f"   {text}  ({time.monotonic() - t0:.1f}s)")
        return value

    def prepare_model(self) -> str:
        from attribution.shipped import resolve_base_model

        folder = resolve_base_model("smollm2-135m-instruct")
        return f"smollm2-135m-instruct ready in {folder}"

    def federate(self, out: Path, options):
        from federated.demo import run_backdoor_demo

        # One federation per run, so reruns on the same database never collide with earlier rounds.
        result = run_backdoor_demo(out, clients=options["clients"], malicious=options["malicious"],
                                   rounds=options["rounds"], cases=options["cases"],
                                   federation=f"demo-{out.name}".lower()[:60])
        sim = result.simulation
        result.line = (f"{len(sim.client_ids)} clients ({', '.join(sim.malicious)} malicious), "
                       f"{len(result.rounds)} rounds written; backdoor success rate of the global model "
                       f"{result.asr:.0%}")
        if result.asr < 0.5:  # DESIGN: a federation where the backdoor did not take says nothing about attribution
            result.line += " (the backdoor has not fully taken: try more --rounds)"
        return result

    def check_worker(self, proc) -> str:
        reply = wait_result(worker_selfcheck.delay(), timeout=180, proc=proc)
        return (f"worker pid {reply['worker_pid']} ran a task against {reply['database']} "
                f"({reply['server']}); ledger schema migrated: {reply['ledger_migrated']}")

    def pipeline(self, base_url: str, fed):
        from audits.demo import DemoError, run_demo

        prompts = [{"prompt": case["prompt"], "max_new_tokens": 24, "external_ref": f"case-{case['case']}"}
                   for case in fed.cases]
        try:
            summary = run_demo(base_url=base_url, federation=fed.federation,
                               round_dirs=list(fed.rounds), prompts=prompts)
        except DemoError as exc:
            raise CommandError(str(exc)) from None
        summary.line = (f"{len(summary.rounds)} rounds uploaded, {len(summary.generation_ids)} prompts submitted; "
                        f"status {summary.status_counts}")
        return summary

    def report_attribution(self, fed, summary) -> None:
        from audits.models import Generation

        self.stdout.write("\nPer prompt (read back from the database; truth from cases.jsonl):")
        self.stdout.write(f"  {'gen':>4} {'triggered':>9} {'predicted':<12} {'truth':<24} response")
        hits = total = 0
        for case, gid in zip(fed.cases, summary.generation_ids, strict=True):
            gen = Generation.objects.get(pk=gid)
            predicted = next((p["predicted_client"] for p in summary.predictions if p["id"] == gid), None)
            truth = case["responsible"]
            if case["triggered"]:
                total += 1
                hits += predicted in truth
            self.stdout.write(f"  {gid:>4} {str(case['triggered']):>9} {predicted or gen.status:<12} "
                              f"{','.join(truth) or '-':<24} {gen.response[:60]!r}")
        if total:
            self.stdout.write(f"  triggered prompts attributed to a malicious client: {hits}/{total}")
        self.stdout.write("\n" + summary.table() + "\n")

    def settle(self, fed, summary) -> str:
        from registry.models import Federation
        from rewards.harm import harm_policy_create
        from rewards.selectors import flag_list, ledger_balances
        from rewards.services import period_settle

        federation = Federation.objects.get(slug=summary.federation)
        # The operator's policy names the attack's output by its opening words, so a response that
        # carries only part of the sentinel (a backdoor that has half taken) still counts as harmful.
        keyword = " ".join(fed.sentinel.split()[:3])
        if not federation.harm_policies.filter(name="backdoor-sentinel").exists():
            harm_policy_create(federation=federation, name="backdoor-sentinel", keywords=[keyword], actor="demo")
        end = timezone.now() + timedelta(seconds=1)
        result = period_settle(federation=federation, period_start=end - timedelta(days=1), period_end=end,
                               pool_amount=POOL, currency="EUR", actor="demo")
        s = result.settlement
        self.stdout.write(f"   period {s.period}: pool {s.pool_amount} EUR cents, {s.generations_count} generations, "
                          f"{s.harmful_count} harmful (policy keyword {keyword!r}), {s.flags_count} flag(s)")
        for flag in flag_list(federation=federation):
            self.stdout.write(f"   flag #{flag.id}: {flag.client_id} by {flag.method} (score {flag.score:.3g}, "
                              f"q {flag.q_value if flag.q_value is None else f'{flag.q_value:.3g}'}) -> {flag.state}")
        for bal in ledger_balances(federation=federation):
            if bal.client_id:
                self.stdout.write(f"   ledger {bal.kind:<10} {bal.client_id:<12} {bal.balance:>9} {bal.currency}")
        held = "payouts of flagged clients held" if s.flags_count else "no client flagged, nothing held"
        return (f"allocated {s.allocated_amount}, held {s.held_amount}, retained {s.retained_amount} "
                f"(ledger tx seq {s.ledger_seq}; {held})")
