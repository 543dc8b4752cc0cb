"""`manage.py create_federation SLUG [--name NAME] [--auto-register-clients]`."""

from django.core.management.base import BaseCommand, CommandError

from registry.errors import PlatformError
from registry.services import federation_create


class Command(BaseCommand):
    help = "Create a federation (tenant)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", default="")
        parser.add_argument(
            "--auto-register-clients",
            action="store_true",
            help="let rounds name clients that are not registered yet (they are created)",
        )

    def handle(self, *args, **options):
        try:
            federation = federation_create(
                slug=options["slug"], name=options["name"], auto_register_clients=options["auto_register_clients"]
            )
        except PlatformError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        self.stdout.write(f"created federation {federation.slug} (id {federation.pk})")
