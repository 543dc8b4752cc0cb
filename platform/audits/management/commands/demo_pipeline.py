"""`manage.py demo_pipeline --base-url URL --federation SLUG --round-dir DIR [...] --prompts FILE.jsonl`.

Runs `audits.demo.run_demo` against a running server and worker and prints the
summary read back from the database. Each line of FILE.jsonl is one item of
`POST /api/v1/generations/batch`, e.g. {"prompt": "...", "response": "..."}.
"""

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from audits.demo import DemoError, run_demo


class Command(BaseCommand):
    help = "Upload rounds and submit prompts through the HTTP API, wait for the worker, print the summary."

    def add_arguments(self, parser):
        parser.add_argument("--base-url", required=True)
        parser.add_argument("--federation", required=True)
        parser.add_argument("--round-dir", action="append", type=Path, required=True, dest="round_dirs")
        parser.add_argument("--prompts", type=Path, required=True)
        parser.add_argument("--timeout", type=float, default=900)

    def handle(self, *args, **options):
        prompts = _read_prompts(options["prompts"])
        try:
            summary = run_demo(
                base_url=options["base_url"],
                federation=options["federation"],
                round_dirs=options["round_dirs"],
                prompts=prompts,
                timeout_s=options["timeout"],
            )
        except DemoError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(summary.table())


def _read_prompts(path: Path) -> list[dict]:
    if not path.is_file():
        raise CommandError(f"no prompts file {path}")
    items = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CommandError(f"{path}:{n}: not JSON ({exc})") from None
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
            raise CommandError(f"{path}:{n}: each line must be an object with a string 'prompt'")
        items.append(item)
    return items
