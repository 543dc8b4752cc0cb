"""Validation of identifiers and amounts, and the canonical JSON that every ledger hash is taken over.

Hashes must be reproducible from what Postgres hands back, so the canonical
form only admits values that survive a JSONB round trip unchanged:
strings without NUL, integers, finite floats, booleans, None, lists and
string-keyed dicts. JSONB stores numbers as `numeric`, so ``5.0`` comes back
as ``5.0`` but ``1e20`` comes back as the integer ``100000000000000000000``;
the canonical form therefore writes every integral float as an integer and
every other float by its shortest round-trip repr, which is what both sides
produce.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ledger.errors import InvalidInput

INT64_MAX = 2**63 - 1
GENESIS_HASH = "0" * 64

_FEDERATION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_CLIENT = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # ROUND_FORMAT.md's clients[].id
_CURRENCY = re.compile(r"^[A-Z][A-Z0-9]{2,11}$")
_PERIOD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


def _check(pattern: re.Pattern, value: object, what: str, rule: str) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise InvalidInput(f"invalid {what} {value!r}: expected {rule}")
    return value


def federation_id(value: object) -> str:
    return _check(_FEDERATION, value, "federation", "1-128 characters of [A-Za-z0-9._:-]")


def client_id(value: object) -> str:
    return _check(_CLIENT, value, "client id", "1-64 characters of [A-Za-z0-9._-]")


def currency_code(value: object) -> str:
    return _check(_CURRENCY, value, "currency", "3-12 upper-case letters/digits, e.g. EUR")


def period_label(value: object) -> str:
    return _check(_PERIOD, value, "period", "1-64 characters of [A-Za-z0-9._:-], e.g. 2025-06")


def idempotency_key(value: object) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 200 or not value.isprintable():
        raise InvalidInput(f"invalid idempotency key {value!r}: expected 1-200 printable characters")
    return value


def amount(value: object, what: str = "amount", *, allow_zero: bool = False) -> int:
    """An integer number of minor units that fits Postgres bigint; floats are refused outright."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{what} must be an integer number of minor units, got {value!r}")
    if abs(value) > INT64_MAX:
        raise InvalidInput(f"{what} {value} does not fit a 64-bit integer")
    if value == 0 and not allow_zero:
        raise InvalidInput(f"{what} must not be zero")
    return value


def normalize(value: Any, where: str = "value") -> Any:
    """The JSONB-stable form of `value` (see module docstring); raises InvalidInput otherwise."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float | Decimal):
        return _normalize_number(value, where)
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidInput(f"{where} contains a NUL character, which Postgres cannot store")
        return value
    if isinstance(value, Mapping):
        return {_key(k, where): normalize(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalize(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise InvalidInput(f"{where} has a value of type {type(value).__name__}, which is not JSON")


def _normalize_number(value: float | Decimal, where: str) -> int | float:
    as_float = float(value)
    if not math.isfinite(as_float):
        raise InvalidInput(f"{where} is {value}, but only finite numbers can be stored")
    if as_float.is_integer():
        return int(as_float)
    return as_float


def _key(key: object, where: str) -> str:
    if not isinstance(key, str):
        raise InvalidInput(f"{where} has a non-string key {key!r}")
    if "\x00" in key:
        raise InvalidInput(f"{where} has a key with a NUL character")
    return key


def canonical_json(value: Any) -> str:
    return json.dumps(normalize(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def sha256_hex(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def request_hash(body: Mapping[str, Any]) -> str:
    """The hash stored with an idempotency key: same key + same body => same hash."""
    return sha256_hex(canonical_json(body))


def chain_hash(prev_hash: str, body: Mapping[str, Any]) -> str:
    """Link one record into its federation's chain: sha256(prev_hash || canonical body)."""
    return sha256_hex(prev_hash + canonical_json(body))


def timestamp(value: datetime) -> str:
    """UTC ISO-8601 with microseconds, identical before and after a timestamptz round trip."""
    if value.tzinfo is None:
        raise InvalidInput("timestamps must be timezone-aware")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def now() -> datetime:
    return datetime.now(UTC)
