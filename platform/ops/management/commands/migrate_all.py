"""Migrate both ORMs in order: Django's apps first, then the ledger schema (alembic)."""

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connection


class Command(BaseCommand):
    help = "Run Django migrations, then `alembic upgrade head` for the ledger schema."

    def handle(self, *args, **options):
        call_command("migrate", interactive=False, verbosity=options["verbosity"])
        from ledger.migrate import upgrade

        upgrade(database_url_for_connection())
        self.stdout.write(self.style.SUCCESS("Django apps and ledger schema are up to date."))


def database_url_for_connection() -> str:
    """The URL of the database Django is connected to (the test database under pytest)."""
    import dbenv

    return dbenv.with_database(settings.DATABASE_URL, connection.settings_dict["NAME"])
