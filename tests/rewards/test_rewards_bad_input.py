"""Bad input gets a named error whose message says what is wrong, and nothing is written on either side."""

from __future__ import annotations

from datetime import timedelta

import pytest
from conftest import END, START, add_generation, ledger_balances, settle
from django.core.management import CommandError, call_command
from registry.errors import InvalidInput, NotFound, PlatformError
from rewards.harm import harm_policy_create
from rewards.models import HarmMark, Settlement
from rewards.rules import SettlementRules
from rewards.services import flag_review, plan_settle


@pytest.fixture
def period_with_harm(fed, round0):
    add_generation(fed, round0, {"alice": 0.6, "bob": 0.4}, response="PWNED")
    harm_policy_create(federation=fed, name="sentinel", keywords=["pwned"], actor="ops")
    return fed


def _nothing_written(fed) -> bool:
    return (not Settlement.objects.filter(federation=fed).exists() and ledger_balances(fed) == {}
            and not HarmMark.objects.filter(federation=fed).exists())


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"pool": -5}, InvalidInput, "pool_amount must be a positive integer"),
    ({"pool": 0}, InvalidInput, "pool_amount must be a positive integer"),
    ({"pool": 10.5}, InvalidInput, "pool_amount must be a positive integer"),
    ({"end": START - timedelta(days=1)}, InvalidInput, "period_end .* must be after period_start"),
    ({"end": START}, InvalidInput, "must be after period_start"),
    ({"currency": "euro"}, InvalidInput, "invalid currency 'euro'"),
    ({"basis": "vibes"}, InvalidInput, "basis must be one of"),
    ({"actor": ""}, InvalidInput, "actor must name who acts"),
    ({"rules": SettlementRules(exclude=("mallory",))}, NotFound, "no client 'mallory'"),
])
def test_bad_settlement_input_is_refused_and_changes_nothing(period_with_harm, kwargs, error, message):
    with pytest.raises(error, match=message):
        settle(period_with_harm, **kwargs)
    assert _nothing_written(period_with_harm)


@pytest.mark.parametrize(("rules", "message"), [
    ({"cap": 5}, r"unknown rule\(s\) \['cap'\]"),
    ({"minimum_payout": -1}, "minimum_payout must be an integer >= 0"),
    ({"cap_per_client": 0}, "cap_per_client must be an integer >= 1"),
    ({"flagged_policy": "ignore"}, "flagged_policy must be one of"),
    ({"evidence_q": 1.5}, r"evidence_q must be a number in \(0, 1\)"),
    ({"exclude": "alice"}, "exclude must be a list of client ids"),
    ({"exclude": ["bad id!"]}, "invalid client id"),
])
def test_bad_rules_name_the_rule(rules, message):
    with pytest.raises(InvalidInput, match=message):
        SettlementRules.from_dict(rules)


def test_an_unsaved_federation_is_refused(db):
    from registry.models import Federation

    with pytest.raises(InvalidInput, match="federation must be a saved Federation"):
        settle(Federation(slug="ghost"), pool=10)


def test_an_unknown_flag_is_not_found_and_changes_nothing(period_with_harm):
    with pytest.raises(NotFound, match="has no flag 424242"):
        flag_review(federation=period_with_harm, flag_id=424242, state="confirmed", actor="a")
    with pytest.raises(InvalidInput, match="flag id must be a positive integer"):
        flag_review(federation=period_with_harm, flag_id=-1, state="confirmed", actor="a")
    assert _nothing_written(period_with_harm)


def test_a_federation_without_a_plan_cannot_be_settled_by_the_schedule(fed):
    with pytest.raises(NotFound, match="has no reward plan"):
        plan_settle(federation_id=fed.pk, period_start=START, period_end=END)


@pytest.mark.parametrize(("args", "message"), [
    (["settle_period", "--federation", "nope", "--start", "2026-01-05", "--end", "2026-01-06", "--pool", "10",
      "--currency", "EUR"], "unknown_federation: no federation 'nope'"),
    (["settle_period", "--federation", "{fed}", "--start", "2026-01-06", "--end", "2026-01-05", "--pool", "10",
      "--currency", "EUR"], "invalid_period: period_end"),
    (["settle_period", "--federation", "{fed}", "--start", "yesterday", "--end", "2026-01-05", "--pool", "10",
      "--currency", "EUR"], "start must be an ISO date"),
    (["settle_period", "--federation", "{fed}", "--start", "2026-01-05", "--end", "2026-01-06", "--pool", "-3",
      "--currency", "EUR"], "invalid_pool"),
    (["settle_period", "--federation", "{fed}", "--start", "2026-01-05", "--end", "2026-01-06", "--pool", "10",
      "--currency", "EUR", "--rules", "[1]"], "--rules must be a JSON object"),
    (["review_flag", "--federation", "{fed}", "--flag", "999999", "--state", "dismissed"], "unknown_flag"),
    (["review_flag", "--federation", "{fed}"], "give --flag ID and --state, or --list"),
    (["export_payouts", "--federation", "{fed}", "--settlement", "999999"], "unknown_settlement"),
    (["export_payouts", "--federation", "{fed}", "--start", "2026-01-05", "--end", "2026-01-06",
      "--currency", "EUR"], "has no EUR settlement for period 20260105T000000Z-20260106T000000Z"),
])
def test_commands_answer_bad_input_with_a_command_error(period_with_harm, args, message):
    args = [a.format(fed=period_with_harm.slug) for a in args]
    with pytest.raises(CommandError, match=message):
        call_command(*args)
    assert _nothing_written(period_with_harm)


def test_platform_errors_carry_a_code_and_field(period_with_harm):
    with pytest.raises(PlatformError) as info:
        settle(period_with_harm, currency="eu")
    assert (info.value.code, info.value.field, info.value.status) == ("invalid_currency", "currency", 422)
