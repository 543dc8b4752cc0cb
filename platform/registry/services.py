"""Writes to the registry: federations, clients, API tokens and round registration.

Round registration is all-or-nothing. The folder is validated by the engine's
own reader (`attribution.read_round`: manifest keys, every sha256, no
pickles) before anything is stored; files are copied to the artifact storage
under a fresh prefix; the rows are written in one transaction; and if that
transaction fails the copied files are deleted again. Registering the same
round twice (same global and client hashes) returns the existing row, so an
uploader may retry safely; a different round under a taken number is a
conflict.
"""

from __future__ import annotations

import hashlib
import secrets
import tempfile
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from .archive import unpack_round_archive
from .artifacts import (
    check_storage_path,
    delete_folder,
    list_folder,
    local_folder,
    new_round_prefix,
    store_folder,
    stored_size,
)
from .errors import Conflict, InvalidInput
from .models import SCOPES, ApiToken, Client, ClientUpdate, Federation, Round
from .snapshots import read_snapshot, stored_manifest_overrides

TOKEN_PREFIX = "ptk_"
# last_used_at is a hint for humans; writing it on every request would turn reads into writes.
LAST_USED_RESOLUTION = timedelta(seconds=60)
CLIENT_FIELDS = ("display_name", "organisation", "contact", "payout_account_ref", "status")


def federation_create(*, slug: str, name: str = "", auto_register_clients: bool = False) -> Federation:
    if Federation.objects.filter(slug=slug).exists():
        raise Conflict("federation_exists", f"federation {slug!r} already exists", field="slug")
    federation = Federation(slug=slug, name=name or slug, auto_register_clients=auto_register_clients)
    _full_clean(federation)
    federation.save()
    return federation


def client_register(*, federation: Federation, client_id: str, **fields: str) -> Client:
    if Client.objects.filter(federation=federation, client_id=client_id).exists():
        raise Conflict("client_exists", f"client {client_id!r} is already registered", field="client_id")
    client = Client(federation=federation, client_id=client_id, **_client_fields(fields))
    _full_clean(client, exclude=["federation"])
    client.save()
    return client


def client_update(*, client: Client, **fields: str) -> Client:
    for name, value in _client_fields(fields).items():
        setattr(client, name, value)
    _full_clean(client, exclude=["federation"])
    client.save()
    return client


def token_issue(*, federation: Federation, name: str, scopes: list[str]) -> tuple[ApiToken, str]:
    """Create a token; return it with its secret, which is never stored and never shown again."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise InvalidInput(
            "invalid_scope", f"scopes must be a non-empty subset of {', '.join(SCOPES)}; got {scopes!r}", field="scopes"
        )
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        federation=federation, name=name, prefix=secret[:12], digest=token_digest(secret), scopes=sorted(set(scopes))
    )
    return token, secret


def token_revoke(*, token: ApiToken) -> ApiToken:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    return token


def token_authenticate(*, secret: str) -> ApiToken | None:
    """The active token with this secret (recording its use), or None."""
    token = ApiToken.objects.select_related("federation").filter(digest=token_digest(secret)).first()
    if token is None or token.revoked_at is not None:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


def token_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def round_register_from_folder(*, federation: Federation, folder: Path) -> tuple[Round, bool]:
    """Validate a local round folder, copy it into the artifact storage and record it.

    Returns (round, created); created is False when the identical round was already registered.
    """
    snapshot = read_snapshot(folder)
    _check_federation(federation, snapshot.manifest.federation)
    existing = _same_round(federation, snapshot)
    if existing is not None:
        return existing, False
    prefix = new_round_prefix(federation_slug=federation.slug, number=snapshot.manifest.round)
    names, size = store_folder(src=folder, prefix=prefix, overrides=stored_manifest_overrides(folder, snapshot))
    try:
        return _create_round_rows(federation, snapshot, prefix=prefix, names=names, size=size), True
    except BaseException:
        delete_folder(prefix=prefix, names=names)
        raise


def round_register_from_archive(*, federation: Federation, archive: Path) -> tuple[Round, bool]:
    """Unpack an uploaded `.tar.gz`/`.zip` safely, then register it like a folder."""
    with tempfile.TemporaryDirectory(prefix="round-upload-", dir=settings.FILE_UPLOAD_TEMP_DIR) as tmp:
        root = unpack_round_archive(archive, Path(tmp), max_bytes=settings.MAX_EXTRACTED_BYTES)
        return round_register_from_folder(federation=federation, folder=root)


def round_register_from_storage(*, federation: Federation, path: str) -> tuple[Round, bool]:
    """Register a round folder that is already in the artifact storage, in place."""
    prefix = check_storage_path(path)
    names = list_folder(prefix)
    snapshot = read_snapshot(local_folder(prefix=prefix, names=names))
    _check_federation(federation, snapshot.manifest.federation)
    existing = _same_round(federation, snapshot)
    if existing is not None:
        return existing, False
    size = sum(stored_size(f"{prefix}/{n}") for n in names)
    return _create_round_rows(federation, snapshot, prefix=prefix, names=names, size=size), True


def _check_federation(federation: Federation, manifest_federation: str) -> None:
    if manifest_federation != federation.slug:
        raise InvalidInput(
            "federation_mismatch",
            f"the round's manifest names federation {manifest_federation!r}, but it is being "
            f"registered in {federation.slug!r}",
            field="federation",
        )


def _same_round(federation: Federation, snapshot) -> Round | None:
    """The already-registered identical round, None if the number is free, Conflict otherwise."""
    existing = Round.objects.filter(federation=federation, number=snapshot.manifest.round).first()
    if existing is None:
        return None
    stored = {(u.client.client_id, u.sha256) for u in existing.updates.select_related("client")}
    incoming = {(c["id"], c["sha256"].lower()) for c in snapshot.manifest.clients}
    if existing.global_sha256 == snapshot.manifest.global_sha256.lower() and stored == incoming:
        return existing
    raise Conflict(
        "round_exists",
        f"round {snapshot.manifest.round} of {federation.slug!r} is already registered with different weights",
        field="round",
    )


def _create_round_rows(federation: Federation, snapshot, *, prefix: str, names: list[str], size: int) -> Round:
    manifest = snapshot.manifest
    try:
        with transaction.atomic():
            clients = _resolve_clients(federation, [c["id"] for c in manifest.clients])
            round_ = Round.objects.create(
                federation=federation,
                number=manifest.round,
                base_model=manifest.base_model,
                kind=manifest.kind,
                aggregation=manifest.aggregation,
                manifest=manifest.raw,
                global_sha256=manifest.global_sha256.lower(),
                artifact_path=prefix,
                files=names,
                size_bytes=size,
            )
            ClientUpdate.objects.bulk_create(
                ClientUpdate(
                    round=round_,
                    client=clients[c["id"]],
                    num_examples=c["num_examples"],
                    sha256=c["sha256"].lower(),
                    path=c["path"],
                )
                for c in manifest.clients
            )
    except IntegrityError:  # a concurrent registration of the same number won the race
        raise Conflict(
            "round_exists", f"round {manifest.round} of {federation.slug!r} is already registered", field="round"
        ) from None
    return round_


def _resolve_clients(federation: Federation, client_ids: list[str]) -> dict[str, Client]:
    known = {c.client_id: c for c in Client.objects.filter(federation=federation, client_id__in=client_ids)}
    missing = [cid for cid in client_ids if cid not in known]
    if missing and not federation.auto_register_clients:
        raise InvalidInput(
            "unknown_client",
            f"the round names client(s) not registered in {federation.slug!r}: {', '.join(missing)}; "
            "register them first (POST /api/v1/clients)",
            field="clients",
        )
    for cid in missing:
        known[cid] = Client.objects.create(federation=federation, client_id=cid, display_name=cid)
    return known


def _client_fields(fields: dict) -> dict:
    unknown = sorted(set(fields) - set(CLIENT_FIELDS))
    if unknown:
        raise InvalidInput("invalid_field", f"unknown client field(s): {', '.join(unknown)}", field=unknown[0])
    return {k: v for k, v in fields.items() if v is not None}


def _full_clean(instance, exclude: list[str] | None = None) -> None:
    from django.core.exceptions import ValidationError

    try:
        instance.full_clean(exclude=exclude, validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        raise InvalidInput("invalid", f"{field}: {' '.join(messages)}", field=field) from None
