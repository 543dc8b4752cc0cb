"""Generations and their attributions, laid out for queries over every generation ever attributed.

- `Generation`: one prompt (+ response) against one round; its lifecycle
  (queued → running → done | failed with a reason) and timings.
- `AttributionRun`: one engine run over a generation, with its provenance
  (method version, config + hash, tracked modules, snapshot hashes). When the
  generation asked for a round lineage (`Generation.lineage`), the run also
  holds it as one JSON document (`attribution.lineage`'s `to_dict`, less the
  per-round result the rows already hold): per token the round that made it
  and its top client there, the lineage's sequence shares, and the provenance
  of every earlier round it scored tokens at. It is
  unique per (generation, method version, config hash): that key makes a
  re-run of a finished generation a no-op, and a new method version or
  config a new run beside the old one.
- `ClientAttribution`: one row per (run, client): raw score, share, rank, in
  the responsible set. Federation, round and the generation's time are
  copied onto it so "share of client X over a period" is one index range
  scan on (client, created_at) with no join.
- `TokenAttribution`: one row per (run, position): token id and text, the
  top client and its share, and every client's score as a float array in the
  round's client order (`AttributionRun.client_ids`). Indexed on
  (top_client, run) for "tokens where X is top-1".

Scores for all clients live in a Postgres array rather than T x K rows: a
32-token answer over 8 clients is 32 rows, not 256, and the per-token vector
is always read whole.
"""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models
from registry.models import ApiToken, Client, Federation, Round


class Generation(models.Model):
    class Source(models.TextChoices):
        GENERATED = "generated"  # the platform generated the response with the round's model
        SUBMITTED = "submitted"  # prompt + response produced elsewhere, submitted for audit

    class LineageCredit(models.TextChoices):  # attribution.lineage.CREDITS
        MAKING = "making"  # a made token votes with its making round's shares
        CUMULATIVE = "cumulative"  # with their mean over every round up to its making round

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    federation = models.ForeignKey(Federation, on_delete=models.CASCADE, related_name="generations")
    round = models.ForeignKey(Round, on_delete=models.PROTECT, related_name="generations")
    source = models.CharField(max_length=16, choices=Source.choices)
    prompt = models.TextField()
    response = models.TextField(blank=True)  # filled by the worker for source=generated
    max_new_tokens = models.PositiveSmallIntegerField(default=32)
    chat_template = models.BooleanField(default=True)
    lineage = models.BooleanField(default=False)  # also score each token at the round that made it
    lineage_credit = models.CharField(max_length=16, choices=LineageCredit.choices, blank=True)  # "" without lineage
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    failure_code = models.CharField(max_length=64, blank=True)
    failure_reason = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    batch_id = models.UUIDField(null=True, blank=True)
    submitted_by = models.ForeignKey(ApiToken, on_delete=models.SET_NULL, null=True, blank=True)
    external_ref = models.CharField(max_length=200, blank=True)  # the caller's own id, for their bookkeeping
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    engine_ms = models.PositiveIntegerField(null=True, blank=True)  # time inside the engine for this generation

    class Meta:
        indexes = [
            models.Index(fields=["federation", "-created_at"], name="generation_fed_recent"),
            models.Index(fields=["federation", "status"], name="generation_fed_status"),
            models.Index(fields=["round", "status"], name="generation_round_status"),
        ]


class AttributionRun(models.Model):
    generation = models.ForeignKey(Generation, on_delete=models.CASCADE, related_name="runs")
    federation = models.ForeignKey(Federation, on_delete=models.CASCADE, related_name="+")
    round = models.ForeignKey(Round, on_delete=models.PROTECT, related_name="+")
    method_version = models.CharField(max_length=64)
    config = models.JSONField()
    config_hash = models.CharField(max_length=64)
    tracked_modules = models.JSONField()
    snapshot_hashes = models.JSONField()
    provenance = models.JSONField(default=dict)  # the engine's full provenance dict, verbatim
    client_ids = ArrayField(models.CharField(max_length=64))  # the order of TokenAttribution.scores
    predicted_client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="+")
    num_tokens = models.PositiveIntegerField()
    lineage = models.JSONField(null=True, blank=True)  # protoken-lineage/1 document, when the generation asked
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["generation", "method_version", "config_hash"], name="one_run_per_generation_method_config"
            )
        ]


class ClientAttribution(models.Model):
    run = models.ForeignKey(AttributionRun, on_delete=models.CASCADE, related_name="client_rows")
    generation = models.ForeignKey(Generation, on_delete=models.CASCADE, related_name="+")
    federation = models.ForeignKey(Federation, on_delete=models.CASCADE, related_name="+")
    round = models.ForeignKey(Round, on_delete=models.PROTECT, related_name="+")
    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="attributions")
    raw_score = models.FloatField()
    share = models.FloatField()
    rank = models.PositiveSmallIntegerField()  # 1 = predicted client
    in_responsible_set = models.BooleanField()
    created_at = models.DateTimeField()  # the generation's creation time: periods are about generations

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "client"], name="one_row_per_run_client")]
        indexes = [
            models.Index(fields=["client", "created_at"], name="client_attr_client_period"),
            models.Index(fields=["federation", "created_at"], name="client_attr_fed_period"),
        ]


class TokenAttribution(models.Model):
    run = models.ForeignKey(AttributionRun, on_delete=models.CASCADE, related_name="token_rows")
    position = models.PositiveIntegerField()  # 0 = first response token
    token_id = models.PositiveIntegerField()
    text = models.TextField()
    top_client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="top_tokens")
    top_share = models.FloatField()
    scores = ArrayField(models.FloatField())  # raw scores, one per AttributionRun.client_ids

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "position"], name="one_row_per_run_position")]
        indexes = [models.Index(fields=["top_client", "run"], name="token_attr_top_client")]
