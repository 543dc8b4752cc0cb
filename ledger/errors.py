"""Named exceptions of the ledger. Every user error is a `LedgerError` with an actionable message.

The CLI turns any `LedgerError` into exit code 2 and one line on stderr; the
platform maps it to a 4xx with the same message. `TamperDetected` is raised
only when stored rows disagree with their hashes (never for user input).
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base class: bad input or a refused operation; nothing was written."""


class InvalidInput(LedgerError, ValueError):
    """An argument is malformed (bad id, negative amount, NaN share, unknown column ...)."""


class UnbalancedTransaction(InvalidInput):
    """The entries of a transaction do not sum to zero in every currency."""


class IdempotencyConflict(LedgerError):
    """The idempotency key was already used for a request with a different body."""


class InsufficientFunds(LedgerError):
    """The reward pool holds less than the amount to allocate."""


class NothingToAllocate(LedgerError):
    """The rules leave nobody to pay (no eligible client, or a zero pool)."""


class NotFound(LedgerError, LookupError):
    """A transaction, flag or export that was asked for does not exist."""


class NotReversible(LedgerError):
    """The transaction cannot be reversed (a reversal, a payout, or already reversed)."""


class HoldActive(LedgerError):
    """A client's held amount cannot be released while a flag on it is open or confirmed."""


class InvalidTransition(LedgerError):
    """A flag review moves to a state its current state does not allow."""


class NothingToExport(LedgerError):
    """No client has a positive, unexported, unheld payable balance in that currency."""


class TamperDetected(LedgerError):
    """Stored rows no longer match their hashes (see `ledger.verify`)."""
