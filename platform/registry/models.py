"""Federations (tenants), their clients, rounds, client updates and API tokens.

A federation is the tenant boundary: every other row hangs off one, and every
API query is filtered by the federations the caller may see.

- `Client` is a participant's registration (who to pay, how to reach them),
  unique per federation by the id it uses in round manifests.
- `Round` is one registered `protoken-round/1` snapshot: the manifest as
  read, and where its files live in the `artifacts` storage (`artifact_path`,
  a storage name prefix, plus the list of files so a worker can copy the
  round out of a remote backend without listing it).
- `ClientUpdate` is one row per client in a round (`num_examples`, sha256).
- `ApiToken` stores only the sha256 of its secret; the secret is shown once.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.validators import RegexValidator
from django.db import models

SCOPES = ("ingest", "generate", "read")
CLIENT_ID_VALIDATOR = RegexValidator(r"^[A-Za-z0-9._-]{1,64}$", "1-64 characters of A-Z a-z 0-9 . _ -")


class Federation(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    # When true, a round may name clients that are not registered yet; they are created.
    auto_register_clients = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.slug


class Client(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        SUSPENDED = "suspended"

    federation = models.ForeignKey(Federation, on_delete=models.CASCADE, related_name="clients")
    client_id = models.CharField(max_length=64, validators=[CLIENT_ID_VALIDATOR])  # the id in manifests
    display_name = models.CharField(max_length=200, blank=True)
    organisation = models.CharField(max_length=200, blank=True)
    contact = models.CharField(max_length=254, blank=True)
    payout_account_ref = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["federation", "client_id"], name="client_unique_per_federation")
        ]

    def __str__(self) -> str:
        return f"{self.federation_id}:{self.client_id}"


class Round(models.Model):
    class Kind(models.TextChoices):
        WEIGHTS = "weights"
        PEFT = "peft"

    federation = models.ForeignKey(Federation, on_delete=models.CASCADE, related_name="rounds")
    number = models.PositiveIntegerField()
    base_model = models.CharField(max_length=500)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    aggregation = models.CharField(max_length=64)
    manifest = models.JSONField()
    global_sha256 = models.CharField(max_length=64)
    artifact_path = models.CharField(max_length=500)  # storage name prefix of the round folder
    files = models.JSONField(default=list)  # file names relative to artifact_path
    size_bytes = models.BigIntegerField(default=0)
    registered_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["federation", "number"], name="round_unique_per_federation")
        ]
        ordering = ["federation_id", "number"]

    def __str__(self) -> str:
        return f"{self.federation_id}:round-{self.number}"


class ClientUpdate(models.Model):
    round = models.ForeignKey(Round, on_delete=models.CASCADE, related_name="updates")
    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="updates")
    num_examples = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    path = models.CharField(max_length=300)  # folder relative to the round

    class Meta:
        constraints = [models.UniqueConstraint(fields=["round", "client"], name="one_update_per_client_round")]


class ApiToken(models.Model):
    federation = models.ForeignKey(Federation, on_delete=models.CASCADE, related_name="tokens")
    name = models.CharField(max_length=200)
    prefix = models.CharField(max_length=16)  # first characters of the secret, to recognise it
    digest = models.CharField(max_length=64, unique=True)  # sha256 hex of the whole secret
    scopes = ArrayField(models.CharField(max_length=16), default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.federation_id}:{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class Membership(models.Model):
    """A console user's access to a federation, with the same scopes as tokens."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    federation = models.ForeignKey(Federation, on_delete=models.CASCADE, related_name="memberships")
    scopes = ArrayField(models.CharField(max_length=16), default=list)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "federation"], name="one_membership_per_user")]
