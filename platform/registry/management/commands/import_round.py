"""`manage.py import_round PATH [--federation SLUG]`: register a local round folder or archive."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from registry.errors import PlatformError
from registry.selectors import federation_get
from registry.services import round_register_from_archive, round_register_from_folder


class Command(BaseCommand):
    help = "Validate a protoken-round/1 folder (or .tar.gz/.zip of one), copy it to the artifact store, record it."

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)
        parser.add_argument("--federation", help="federation slug (default: the manifest's `federation`)")

    def handle(self, *args, **options):
        path: Path = options["path"]
        if not path.exists():
            raise CommandError(f"no such file or folder: {path}")
        try:
            federation = federation_get(slug=options["federation"] or _manifest_federation(path))
            register = round_register_from_folder if path.is_dir() else round_register_from_archive
            kwargs = {"folder": path} if path.is_dir() else {"archive": path}
            round_, created = register(federation=federation, **kwargs)
        except PlatformError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        verb = "registered" if created else "already registered:"
        self.stdout.write(
            f"{verb} round {round_.number} of {federation.slug} ({round_.updates.count()} clients) "
            f"at {round_.artifact_path}"
        )


def _manifest_federation(path: Path) -> str:
    import json

    manifest = path / "manifest.json"
    if not path.is_dir() or not manifest.is_file():
        raise CommandError("--federation is required unless PATH is a round folder with a manifest.json")
    try:
        return str(json.loads(manifest.read_text())["federation"])
    except (ValueError, KeyError) as exc:
        raise CommandError(f"{manifest}: cannot read `federation` ({exc})") from None
