"""Writes for generations: submission, the worker's attribution pass, and result storage.

Submission creates `queued` rows and enqueues a task *after* the transaction
commits (`transaction.on_commit`), so a worker never looks for a row that is
not visible yet, and a rolled-back submission enqueues nothing.

The worker pass for one generation:

1. claim: mark it `running` (attempts + 1); a `done` or `failed` generation is
   left alone, which makes redelivered or duplicated tasks no-ops;
2. if a run with the current (method version, config hash) is already stored,
   just mark the generation done;
3. run the engine with no database transaction open;
4. store the run, its client rows and token rows and mark `done` in one
   transaction, under a row lock on the generation, re-checking for an
   existing run so two concurrent deliveries store exactly one result.

Errors are sorted in two: *transient* ones (database connection trouble,
accelerator out of memory) propagate so Celery retries with backoff, and
*permanent* ones (a bad round, a bad prompt, an engine error) mark the
generation `failed` with a code and the reason, and are not retried.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from dataclasses import dataclass

from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone
from registry.errors import InvalidInput, PlatformError
from registry.models import ApiToken, Federation, Round
from registry.selectors import round_get, round_latest

from . import engine
from .models import Generation
from .results import store_result

MAX_PROMPT_CHARS = 20_000
MAX_RESPONSE_CHARS = 20_000
MAX_NEW_TOKENS = 512
MAX_BATCH = 256
# attribution.lineage.DEFAULT_CREDIT; the platform does not import the engine outside the worker.
DEFAULT_LINEAGE_CREDIT = "cumulative"


@dataclass(frozen=True)
class Submission:
    """One prompt (and optional response) as an application submits it."""

    prompt: str
    response: str | None = None
    round_number: int | None = None
    max_new_tokens: int = 32
    chat_template: bool = True
    external_ref: str = ""
    lineage: bool = False  # also score each token at the round that made it (attribution.lineage)
    lineage_credit: str | None = None  # how a made token votes; DEFAULT_LINEAGE_CREDIT when a lineage is asked for

    def __post_init__(self) -> None:
        if not self.prompt or not self.prompt.strip():
            raise InvalidInput("invalid_prompt", "prompt must not be empty", field="prompt")
        if len(self.prompt) > MAX_PROMPT_CHARS:
            raise InvalidInput("invalid_prompt", f"prompt is longer than {MAX_PROMPT_CHARS} characters", field="prompt")
        if self.response is not None and not self.response.strip():
            raise InvalidInput("invalid_response", "response, when given, must not be empty", field="response")
        if self.response is not None and len(self.response) > MAX_RESPONSE_CHARS:
            raise InvalidInput(
                "invalid_response", f"response is longer than {MAX_RESPONSE_CHARS} characters", field="response"
            )
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise InvalidInput(
                "invalid_max_new_tokens", f"max_new_tokens must be in 1..{MAX_NEW_TOKENS}", field="max_new_tokens"
            )
        if self.lineage_credit is not None and not self.lineage:
            raise InvalidInput("invalid_lineage_credit", "lineage_credit needs lineage: true", field="lineage_credit")
        if self.lineage_credit is not None and self.lineage_credit not in Generation.LineageCredit.values:
            raise InvalidInput("invalid_lineage_credit", f"lineage_credit must be one of "
                               f"{', '.join(Generation.LineageCredit.values)}, got {self.lineage_credit!r}",
                               field="lineage_credit")

    @property
    def credit(self) -> str:
        """The lineage credit stored on the generation: "" without a lineage."""
        return (self.lineage_credit or DEFAULT_LINEAGE_CREDIT) if self.lineage else ""


class TransientEngineError(RuntimeError):
    """The engine failed for a reason that may pass (accelerator out of memory): retry later."""


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError, TransientEngineError)


def generation_submit(
    *,
    federation: Federation,
    submission: Submission,
    submitted_by: ApiToken | None = None,
    enqueue: bool = True,
) -> Generation:
    """Create one queued generation and enqueue its attribution once committed.

    `enqueue=False` leaves it queued for a caller that attributes it in-process (the CLI).
    """
    with transaction.atomic():
        generation = _create_generation(federation, submission, submitted_by, batch_id=None)
        if enqueue:
            transaction.on_commit(lambda: _enqueue_one(generation.pk))
    return generation


def generation_submit_batch(
    *, federation: Federation, submissions: list[Submission], submitted_by: ApiToken | None = None
) -> list[Generation]:
    """Create all generations in one transaction; one task per round attributes its group in one pass."""
    if not 1 <= len(submissions) <= MAX_BATCH:
        raise InvalidInput("invalid_batch", f"a batch holds 1..{MAX_BATCH} items", field="items")
    batch_id = uuid.uuid4()
    with transaction.atomic():
        generations = [_create_generation(federation, s, submitted_by, batch_id) for s in submissions]
        groups: dict[int, list[int]] = defaultdict(list)
        for g in generations:
            groups[g.round_id].append(g.pk)
        for ids in groups.values():
            transaction.on_commit(lambda ids=ids: _enqueue_batch(ids))
    return generations


def _create_generation(federation, submission: Submission, submitted_by, batch_id) -> Generation:
    round_ = round_for_generation(federation=federation, round_number=submission.round_number)
    return Generation.objects.create(
        federation=federation,
        round=round_,
        source=Generation.Source.GENERATED if submission.response is None else Generation.Source.SUBMITTED,
        prompt=submission.prompt,
        response=submission.response or "",
        max_new_tokens=submission.max_new_tokens,
        chat_template=submission.chat_template,
        lineage=submission.lineage,
        lineage_credit=submission.credit,
        batch_id=batch_id,
        submitted_by=submitted_by,
        external_ref=submission.external_ref,
    )


def _enqueue_one(generation_id: int) -> None:
    from .tasks import attribute_generation

    attribute_generation.delay(generation_id)


def _enqueue_batch(generation_ids: list[int]) -> None:
    from .tasks import attribute_generations

    attribute_generations.delay(generation_ids)


def generation_attribute(*, generation_id: int) -> Generation:
    """The worker pass for one generation (see the module docstring)."""
    return generations_attribute(generation_ids=[generation_id])[0]


def generations_attribute(*, generation_ids: list[int]) -> list[Generation]:
    """Attribute several generations in one pass: each round is loaded once and its group attributed together."""
    settings_ = engine.engine_settings()
    groups: dict[int, list[Generation]] = defaultdict(list)
    for generation_id in generation_ids:
        generation = _claim(generation_id, settings_)
        if generation is not None:
            groups[generation.round_id].append(generation)
    for group in groups.values():
        _attribute_group(group, settings_)
    by_id = Generation.objects.in_bulk(generation_ids)
    return [by_id[i] for i in generation_ids]


def _claim(generation_id: int, settings_: engine.EngineSettings) -> Generation | None:
    """Mark the generation running; None when there is nothing left to do for it."""
    with transaction.atomic():
        generation = Generation.objects.select_for_update().select_related("round").get(pk=generation_id)
        if generation.status in (Generation.Status.DONE, Generation.Status.FAILED):
            return None
        if generation.runs.filter(method_version=settings_.method_version, config_hash=settings_.config_hash).exists():
            _mark(generation, Generation.Status.DONE)
            return None
        generation.status = Generation.Status.RUNNING
        generation.attempts += 1
        generation.started_at = timezone.now()
        generation.save(update_fields=["status", "attempts", "started_at"])
    return generation


def _attribute_group(group: list[Generation], settings_: engine.EngineSettings) -> None:
    if len(group) == 1:
        _attribute_one(group[0], settings_)
        return
    # A lineage walks back through earlier rounds: one engine call per credit, apart from the rest.
    for key in sorted({(g.lineage, g.lineage_credit) for g in group}):
        part = [g for g in group if (g.lineage, g.lineage_credit) == key]
        if len(part) == 1:
            _attribute_one(part[0], settings_)
        elif part:
            _attribute_part(part, settings_)


def _attribute_part(part: list[Generation], settings_: engine.EngineSettings) -> None:
    try:
        started = time.perf_counter()
        results = _run(part, settings_)
        engine_ms = round((time.perf_counter() - started) * 1000 / len(part))
    except Exception as exc:
        _raise_if_transient(exc)
        # One bad item fails the whole batched call: attribute one by one so only it fails.
        for generation in part:
            _attribute_one(generation, settings_)
        return
    for generation, (result, lineage) in zip(part, results, strict=True):
        _store(generation, result, settings_, engine_ms, lineage)


def _attribute_one(generation: Generation, settings_: engine.EngineSettings) -> None:
    try:
        started = time.perf_counter()
        (result, lineage), = _run([generation], settings_)
        engine_ms = round((time.perf_counter() - started) * 1000)
    except Exception as exc:
        _raise_if_transient(exc)
        _fail_permanently(generation, exc)
        return
    _store(generation, result, settings_, engine_ms, lineage)


def _run(part: list[Generation], settings_: engine.EngineSettings) -> list[tuple[object, object | None]]:
    """(published result, lineage or None) per generation of one round, all with the same lineage and credit."""
    config = settings_.config
    loaded = engine.loaded_round(part[0].round, config)
    items = [_engine_item(g) for g in part]
    if part[0].lineage:
        lineages = engine.run_engine_lineage(loaded, part[0].round, items=items, config=config,
                                             credit=part[0].lineage_credit or DEFAULT_LINEAGE_CREDIT)
        return [(lineage.attributed, lineage) for lineage in lineages]
    if len(part) == 1:
        return [(engine.run_engine(loaded, config=config, **items[0]), None)]
    return [(result, None) for result in engine.run_engine_batch(loaded, items=items, config=config)]


def _engine_item(generation: Generation) -> dict:
    item = {"prompt": generation.prompt, "chat_template": generation.chat_template}
    if generation.source == Generation.Source.SUBMITTED:
        item["response"] = generation.response
    else:
        item["max_new_tokens"] = generation.max_new_tokens
    return item


def _store(generation: Generation, result, settings_: engine.EngineSettings, engine_ms: int, lineage=None) -> None:
    try:
        store_result(generation_id=generation.pk, result=result, settings_=settings_, engine_ms=engine_ms,
                     lineage=lineage)
    except Exception as exc:
        _raise_if_transient(exc)
        _fail_permanently(generation, exc)


def _raise_if_transient(exc: Exception) -> None:
    if isinstance(exc, TRANSIENT_ERRORS):
        raise exc
    if type(exc).__name__ == "OutOfMemoryError":  # torch's, without importing torch here
        engine.round_cache().clear()
        raise TransientEngineError(str(exc)) from exc


def _fail_permanently(generation: Generation, exc: Exception) -> None:
    if isinstance(exc, PlatformError):
        generation_fail(generation_id=generation.pk, code=exc.code, reason=exc.message)
    else:
        generation_fail(generation_id=generation.pk, code=_failure_code(exc), reason=f"{type(exc).__name__}: {exc}")


def _failure_code(exc: Exception) -> str:
    from attribution.errors import AttributionError, SnapshotError

    if isinstance(exc, SnapshotError):
        return "invalid_round"
    if isinstance(exc, AttributionError | ValueError):
        return "invalid_input"
    return "engine_error"


def generation_fail(*, generation_id: int, code: str, reason: str) -> None:
    """Mark a generation failed unless it already finished (a late failure never undoes `done`)."""
    with transaction.atomic():
        generation = Generation.objects.select_for_update().get(pk=generation_id)
        if generation.status == Generation.Status.DONE:
            return
        generation.failure_code = code
        generation.failure_reason = reason[:4000]
        _mark(generation, Generation.Status.FAILED, extra=["failure_code", "failure_reason"])


def _mark(generation: Generation, status: str, extra: list[str] | None = None) -> None:
    generation.status = status
    generation.finished_at = timezone.now()
    generation.save(update_fields=["status", "finished_at", *(extra or [])])


def round_for_generation(*, federation: Federation, round_number: int | None) -> Round:
    if round_number is None:
        return round_latest(federation=federation)
    return round_get(federation=federation, number=round_number)
