"""`manage.py grant_access USERNAME FEDERATION --role operator|auditor|finance`, or `--revoke`.

Sets the user's console role and the matching API session scopes together
(`console.access_grants`).
"""

from django.core.management.base import BaseCommand, CommandError
from registry.errors import PlatformError
from registry.selectors import federation_get

from console.access_grants import ROLE_SCOPES, access_grant, access_revoke


class Command(BaseCommand):
    help = "Give a user a role on a federation (console + API session), or revoke it."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("federation")
        parser.add_argument("--role", choices=list(ROLE_SCOPES), help="operator, auditor or finance")
        parser.add_argument("--revoke", action="store_true", help="remove the user's access to the federation")

    def handle(self, *args, **options):
        if bool(options["role"]) == bool(options["revoke"]):
            raise CommandError("give exactly one of --role ROLE or --revoke")
        try:
            federation = federation_get(slug=options["federation"])
            if options["revoke"]:
                access_revoke(username=options["username"], federation=federation)
                self.stdout.write(f"revoked {options['username']}'s access to {federation.slug}")
                return
            access_grant(username=options["username"], federation=federation, role=options["role"])
        except PlatformError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        self.stdout.write(f"{options['username']} is {options['role']} of {federation.slug} "
                          f"(API scopes {','.join(ROLE_SCOPES[options['role']])})")
