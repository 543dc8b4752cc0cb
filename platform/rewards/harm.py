"""Marking generations harmful: by a reviewer, or automatically by a federation's harm policies.

A policy is validated by the ledger's own `HarmPolicy` (regexes compile,
keywords are non-empty), and the same object decides the matches, so the
platform and ``python -m ledger screen --policy`` agree on what is harmful.
Policies are applied when a period is settled (and on demand); every match is
stored as a `HarmMark` naming the policy and the hits, so a flag's evidence
can be traced back to the rule that produced it.
"""

from __future__ import annotations

from collections.abc import Sequence

from audits.models import Generation
from django.db import IntegrityError, transaction
from django.utils import timezone
from registry.errors import Conflict, InvalidInput, NotFound
from registry.models import Federation

import ledger

from .models import HarmMark, HarmPolicy
from .periods import Period
from .selectors import active_harm_policies


def check_actor(actor: str) -> str:
    if not isinstance(actor, str) or not 1 <= len(actor.strip()) <= 128:
        raise InvalidInput("invalid_actor", f"actor must name who acts (1-128 characters), got {actor!r}",
                           field="actor")
    return actor.strip()


def generation_for_mark(*, federation: Federation, generation_id: int) -> Generation:
    generation = Generation.objects.filter(federation=federation, pk=generation_id).first()
    if generation is None:
        raise NotFound("unknown_generation", f"no generation {generation_id} in federation {federation.slug!r}",
                       field="generation_id")
    return generation


def harm_mark(*, generation: Generation, actor: str, note: str = "") -> HarmMark:
    """A reviewer marks a generation harmful (again: a revoked mark is reactivated)."""
    actor = check_actor(actor)
    mark, created = HarmMark.objects.get_or_create(
        generation=generation, source=HarmMark.Source.REVIEWER, policy=None,
        defaults={"federation_id": generation.federation_id, "actor": actor, "note": note, "reasons": ["reviewer"]},
    )
    if not created and not mark.active:
        mark.revoked_at, mark.revoked_by, mark.actor, mark.note = None, "", actor, note
        mark.save(update_fields=["revoked_at", "revoked_by", "actor", "note"])
    return mark


def harm_unmark(*, generation: Generation, actor: str) -> HarmMark:
    """Revoke the reviewer's mark on a generation; the row stays for the audit trail."""
    actor = check_actor(actor)
    mark = HarmMark.objects.filter(generation=generation, source=HarmMark.Source.REVIEWER,
                                   revoked_at__isnull=True).first()
    if mark is None:
        raise NotFound("unknown_harm_mark", f"generation {generation.pk} has no active reviewer mark",
                       field="generation_id")
    mark.revoked_at, mark.revoked_by = timezone.now(), actor
    mark.save(update_fields=["revoked_at", "revoked_by"])
    return mark


def harm_policy_create(*, federation: Federation, name: str, patterns: Sequence[str] = (),
                       keywords: Sequence[str] = (), actor: str) -> HarmPolicy:
    actor = check_actor(actor)
    rules = policy_rules(name=name, patterns=patterns, keywords=keywords)
    try:
        with transaction.atomic():
            return HarmPolicy.objects.create(federation=federation, name=name, patterns=list(rules.patterns),
                                             keywords=list(rules.keywords), created_by=actor)
    except IntegrityError:
        raise Conflict("harm_policy_exists", f"federation {federation.slug!r} already has a harm policy {name!r}",
                       field="name") from None


def harm_policy_set_active(*, policy: HarmPolicy, active: bool) -> HarmPolicy:
    policy.active = active
    policy.save(update_fields=["active"])
    return policy


def policy_rules(*, name: str, patterns: Sequence[str], keywords: Sequence[str]) -> ledger.HarmPolicy:
    if not isinstance(name, str) or not 1 <= len(name) <= 64:
        raise InvalidInput("invalid_policy", f"policy name must be 1-64 characters, got {name!r}", field="name")
    if not patterns and not keywords:
        raise InvalidInput("invalid_policy", "a harm policy needs at least one pattern or keyword", field="patterns")
    try:
        return ledger.HarmPolicy(patterns=tuple(patterns), keywords=tuple(keywords), name=name)
    except ledger.InvalidInput as exc:
        raise InvalidInput("invalid_policy", str(exc), field="patterns") from exc


def harm_policies_apply(*, federation: Federation, period: Period) -> int:
    """Mark the period's generations that match an active policy; returns how many marks are new."""
    policies = [(p, policy_rules(name=p.name, patterns=p.patterns, keywords=p.keywords))
                for p in active_harm_policies(federation=federation)]
    if not policies:
        return 0
    generations = (Generation.objects.filter(federation=federation, created_at__gte=period.start,
                                             created_at__lt=period.end).exclude(response="")
                   .values_list("pk", "response"))
    marked = set(HarmMark.objects.filter(federation=federation, source=HarmMark.Source.POLICY)
                 .values_list("generation_id", "policy_id"))
    new = [HarmMark(generation_id=pk, federation=federation, source=HarmMark.Source.POLICY, policy=policy,
                    actor=f"policy:{policy.name}", reasons=hits)
           for pk, response in generations.iterator()
           for policy, rules in policies
           if (pk, policy.pk) not in marked and (hits := rules.reasons(response))]
    HarmMark.objects.bulk_create(new)
    return len(new)
