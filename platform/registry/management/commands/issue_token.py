"""`manage.py issue_token FEDERATION --scopes ingest,generate,read [--name NAME]`, or `--revoke PREFIX`.

The secret is printed once, on stdout, alone on its line; only its sha256 is stored.
"""

from django.core.management.base import BaseCommand, CommandError

from registry.errors import PlatformError
from registry.models import ApiToken
from registry.selectors import federation_get
from registry.services import token_issue, token_revoke


class Command(BaseCommand):
    help = "Issue (or revoke) a per-federation API token."

    def add_arguments(self, parser):
        parser.add_argument("federation")
        parser.add_argument("--scopes", default="read", help="comma-separated: ingest, generate, read")
        parser.add_argument("--name", default="cli")
        parser.add_argument("--revoke", metavar="PREFIX", help="revoke the token whose secret starts with PREFIX")

    def handle(self, *args, **options):
        try:
            federation = federation_get(slug=options["federation"])
            if options["revoke"]:
                return self._revoke(federation, options["revoke"])
            scopes = [s.strip() for s in options["scopes"].split(",") if s.strip()]
            token, secret = token_issue(federation=federation, name=options["name"], scopes=scopes)
        except PlatformError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        self.stderr.write(f"token {token.prefix}… for {federation.slug} with scopes {','.join(token.scopes)}:")
        self.stdout.write(secret)

    def _revoke(self, federation, prefix: str) -> None:
        tokens = list(ApiToken.objects.filter(federation=federation, prefix__startswith=prefix[:12]))
        if len(tokens) != 1:
            raise CommandError(f"unknown_token: {len(tokens)} tokens of {federation.slug} start with {prefix!r}")
        token_revoke(token=tokens[0])
        self.stdout.write(f"revoked token {tokens[0].prefix}…")
