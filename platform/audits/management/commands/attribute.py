"""`manage.py attribute FEDERATION --prompt TEXT [--response TEXT] [--round N] [--lineage [--lineage-credit C]]`: attribute one prompt, print the table.

Runs the same service as the worker, in this process, and stores the result
like any other generation (source `generated`, or `submitted` with --response).
"""

from django.core.management.base import BaseCommand, CommandError
from registry.errors import PlatformError
from registry.selectors import federation_get

from audits.models import Generation
from audits.selectors import generation_latest_run, run_client_rows, run_token_rows
from audits.services import DEFAULT_LINEAGE_CREDIT, Submission, generation_attribute, generation_submit


class Command(BaseCommand):
    help = "Attribute one prompt (and optional response) to the clients of a round; print the table."

    def add_arguments(self, parser):
        parser.add_argument("federation")
        parser.add_argument("--prompt", required=True)
        parser.add_argument("--response", default=None, help="audit this response (teacher-forced)")
        parser.add_argument("--round", type=int, default=None, help="round number (default: latest)")
        parser.add_argument("--max-new-tokens", type=int, default=32)
        parser.add_argument("--no-chat-template", action="store_true")
        parser.add_argument("--lineage", action="store_true",
                            help="also score each token at the round that made it, walking back through earlier rounds")
        parser.add_argument("--lineage-credit", choices=Generation.LineageCredit.values, default=None,
                            help="with --lineage: a made token votes with its making round's shares (making) or "
                            f"with their mean over every round up to it (cumulative); default: {DEFAULT_LINEAGE_CREDIT}")

    def handle(self, *args, **options):
        try:
            federation = federation_get(slug=options["federation"])
            submission = Submission(
                prompt=options["prompt"],
                response=options["response"],
                round_number=options["round"],
                max_new_tokens=options["max_new_tokens"],
                chat_template=not options["no_chat_template"],
                lineage=options["lineage"],
                lineage_credit=options["lineage_credit"],
            )
            generation = generation_submit(federation=federation, submission=submission, enqueue=False)
        except PlatformError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        generation = generation_attribute(generation_id=generation.pk)
        if generation.status != "done":
            raise CommandError(f"{generation.failure_code}: {generation.failure_reason}")
        self._print(generation)

    def _print(self, generation) -> None:
        run = generation_latest_run(generation=generation)
        self.stdout.write(f"generation {generation.pk}, round {generation.round.number}, {run.method_version}")
        self.stdout.write(f"response: {generation.response!r}")
        self.stdout.write(f"{'rank':>4}  {'client':<24} {'raw score':>12} {'share':>8}  responsible")
        for row in run_client_rows(run=run):
            mark = "yes" if row.in_responsible_set else ""
            self.stdout.write(
                f"{row.rank:>4}  {row.client.client_id:<24} {row.raw_score:>12.4f} {row.share:>8.4f}  {mark}"
            )
        tokens = " ".join(f"{t.text!r}->{t.top_client.client_id}" for t in run_token_rows(run=run))
        self.stdout.write(f"tokens (top client): {tokens}")
        if run.lineage:
            made = run.lineage["making_round"]
            texts = [t.text for t in run_token_rows(run=run)]
            marks = " ".join(f"{texts[t]!r}->{c}@{'none' if made[t] is None else f'r{made[t]}'}"
                             for t, c in enumerate(run.lineage["token_clients"]))
            self.stdout.write(f"lineage (top client at making round): {marks}")
            self.stdout.write(f"lineage predicted client ({run.lineage['credit']} credit): "
                              f"{run.lineage['predicted_client']}")
