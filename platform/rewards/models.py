"""Django-side bookkeeping of the reward cycle; money and flags themselves live in the ledger.

- `HarmPolicy`: per-federation regexes/keywords; a generation whose response
  matches gets a `HarmMark` of source ``policy`` when a period is settled.
- `HarmMark`: a generation marked harmful, by a reviewer or a policy, with
  who, why and when; revoking keeps the row (``revoked_at``) for the audit.
- `RewardPlan`: what the scheduled settlement pays a federation per period.
- `Settlement`: one settled (federation, period, currency), written in the
  same transaction as the ledger allocation it points at (id, seq, hash).
- `PayoutExport`: the stored CSV/JSON of a settlement's payout run and their
  SHA-256s, which the ledger also records.
"""

from __future__ import annotations

from audits.models import Generation
from django.db import models
from registry.models import Federation

BASES = ("sequence_share", "token_mass")


class HarmPolicy(models.Model):
    federation = models.ForeignKey(Federation, on_delete=models.CASCADE, related_name="harm_policies")
    name = models.CharField(max_length=64)
    patterns = models.JSONField(default=list)  # regexes, matched case-insensitively on responses
    keywords = models.JSONField(default=list)  # substrings, matched case-insensitively
    active = models.BooleanField(default=True)
    created_by = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["federation", "name"], name="harm_policy_name_per_federation")]

    def __str__(self) -> str:
        return f"{self.federation_id}:{self.name}"


class HarmMark(models.Model):
    class Source(models.TextChoices):
        REVIEWER = "reviewer"
        POLICY = "policy"

    generation = models.ForeignKey(Generation, on_delete=models.PROTECT, related_name="harm_marks")
    federation = models.ForeignKey(Federation, on_delete=models.CASCADE, related_name="+")
    source = models.CharField(max_length=16, choices=Source.choices)
    policy = models.ForeignKey(HarmPolicy, on_delete=models.PROTECT, null=True, blank=True, related_name="marks")
    actor = models.CharField(max_length=128)
    note = models.TextField(blank=True)
    reasons = models.JSONField(default=list)  # e.g. ["keyword:sentinel"]
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.CharField(max_length=128, blank=True)

    class Meta:
        constraints = [
            # one reviewer mark and one mark per policy on a generation; re-marking reactivates it
            models.UniqueConstraint(fields=["generation", "source", "policy"], nulls_distinct=False,
                                    name="one_harm_mark_per_generation_source_policy"),
        ]
        indexes = [models.Index(fields=["federation", "created_at"], name="harm_mark_fed_time")]

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class RewardPlan(models.Model):
    class Cadence(models.TextChoices):
        DAY = "day"
        WEEK = "week"

    federation = models.OneToOneField(Federation, on_delete=models.CASCADE, related_name="reward_plan")
    active = models.BooleanField(default=True)
    cadence = models.CharField(max_length=8, choices=Cadence.choices, default=Cadence.DAY)
    pool_amount = models.PositiveBigIntegerField()  # minor units per period
    currency = models.CharField(max_length=12)
    basis = models.CharField(max_length=16, choices=[(b, b) for b in BASES], default="sequence_share")
    rules = models.JSONField(default=dict)  # `SettlementRules` fields
    updated_at = models.DateTimeField(auto_now=True)


class Settlement(models.Model):
    class Status(models.TextChoices):
        SETTLED = "settled"  # allocation posted
        EMPTY = "empty"  # no contributions in the period: screened, nothing posted; may be settled again

    federation = models.ForeignKey(Federation, on_delete=models.PROTECT, related_name="settlements")
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    period = models.CharField(max_length=64)  # the ledger's period label
    currency = models.CharField(max_length=12)
    basis = models.CharField(max_length=16, choices=[(b, b) for b in BASES])
    pool_amount = models.PositiveBigIntegerField()
    rules = models.JSONField(default=dict)
    request_hash = models.CharField(max_length=64)  # what was asked; a different ask for a settled period is refused
    status = models.CharField(max_length=16, choices=Status.choices)
    allocated_amount = models.BigIntegerField(default=0)
    held_amount = models.BigIntegerField(default=0)
    retained_amount = models.BigIntegerField(default=0)
    clients_paid = models.PositiveIntegerField(default=0)
    clients_held = models.PositiveIntegerField(default=0)
    generations_count = models.PositiveIntegerField(default=0)
    harmful_count = models.PositiveIntegerField(default=0)
    rounds_count = models.PositiveIntegerField(default=0)
    flags_count = models.PositiveIntegerField(default=0)
    flag_ids = models.JSONField(default=list)  # ledger flag ids recorded by this settlement
    ledger_transaction_id = models.BigIntegerField(null=True, blank=True)
    ledger_seq = models.BigIntegerField(null=True, blank=True)
    ledger_hash = models.CharField(max_length=64, blank=True)
    funding_transaction_id = models.BigIntegerField(null=True, blank=True)
    screening = models.JSONField(default=dict)  # per-method statistics tables and notes
    actor = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["federation", "period", "currency"], name="one_settlement_per_period"),
            models.CheckConstraint(condition=models.Q(period_end__gt=models.F("period_start")),
                                   name="settlement_period_ordered"),
        ]
        ordering = ["federation_id", "-period_start"]

    def __str__(self) -> str:
        return f"{self.federation_id}:{self.period}:{self.currency}"


class PayoutExport(models.Model):
    settlement = models.OneToOneField(Settlement, on_delete=models.PROTECT, related_name="payout_export")
    federation = models.ForeignKey(Federation, on_delete=models.PROTECT, related_name="+")
    period = models.CharField(max_length=64)
    currency = models.CharField(max_length=12)
    ledger_seq = models.BigIntegerField()  # the payout transaction in the ledger
    csv_path = models.CharField(max_length=500)  # names in the `artifacts` storage
    json_path = models.CharField(max_length=500)
    csv_sha256 = models.CharField(max_length=64)
    json_sha256 = models.CharField(max_length=64)
    total_amount = models.BigIntegerField()
    lines_count = models.PositiveIntegerField()
    actor = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.federation_id}:{self.period}:{self.currency}"
