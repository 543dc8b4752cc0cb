"""The ledger's refusals as platform errors, so the API, commands and tasks report them the same way.

A `ledger.LedgerError` raised inside a settlement, review or export becomes
a `registry.errors.PlatformError` with the ledger's message unchanged and a
code named after it (``ledger_hold_active`` ...): invalid input is 422,
something missing 404, a refused state change 409.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from registry.errors import Conflict, InvalidInput, NotFound, PlatformError

import ledger


def translate(exc: ledger.LedgerError) -> PlatformError:
    code = "ledger_" + re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()
    if isinstance(exc, ledger.InvalidInput):
        return InvalidInput(code, str(exc))
    if isinstance(exc, ledger.NotFound):
        return NotFound(code, str(exc))
    return Conflict(code, str(exc))


@contextmanager
def ledger_errors() -> Iterator[None]:
    try:
        yield
    except ledger.LedgerError as exc:
        raise translate(exc) from exc
