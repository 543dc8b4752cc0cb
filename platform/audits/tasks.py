"""Celery tasks: thin wrappers that take ids and call a service.

Both run on the `attribution` queue (CELERY_TASK_ROUTES routes `audits.*`),
acknowledge late (a worker that dies mid-task gets the message redelivered;
the service makes the redelivery a no-op once the result is stored), and
retry transient errors with exponential backoff. When the retries run out,
`on_failure` marks the generation failed so nothing stays `running` forever.
"""

from __future__ import annotations

from celery import Task, shared_task

from .services import TRANSIENT_ERRORS, generation_attribute, generation_fail, generations_attribute


class AttributionTask(Task):
    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True
    max_retries = 5
    retry_backoff = 2
    retry_backoff_max = 120
    retry_jitter = True

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        ids = args[0] if isinstance(args[0], list) else [args[0]]
        for generation_id in ids:
            generation_fail(
                generation_id=generation_id,
                code="retries_exhausted",
                reason=f"gave up after {self.request.retries} retries: {type(exc).__name__}: {exc}",
            )


@shared_task(base=AttributionTask, name="audits.attribute_generation", autoretry_for=TRANSIENT_ERRORS)
def attribute_generation(generation_id: int) -> None:
    generation_attribute(generation_id=generation_id)


@shared_task(base=AttributionTask, name="audits.attribute_generations", autoretry_for=TRANSIENT_ERRORS)
def attribute_generations(generation_ids: list[int]) -> None:
    generations_attribute(generation_ids=generation_ids)
