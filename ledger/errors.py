"""Named errors with messages a user can act on. The platform maps them to 4xx."""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every error the ledger raises on bad input or a refused operation."""


class InvalidPosting(LedgerError):
    """A transaction request is malformed (no entries, zero amount, bad currency, unbalanced)."""


class IdempotencyConflict(LedgerError):
    """The idempotency key was already used with a different request body."""


class InsufficientFunds(LedgerError):
    """Posting would take an account below zero."""


class NotReversible(LedgerError):
    """The transaction cannot be reversed (unknown, already reversed, or itself a reversal)."""


class AllocationError(LedgerError):
    """An allocation cannot be computed from these inputs."""


class NothingToPay(LedgerError):
    """An export found no payable balance for the period and currency."""


class FlagError(LedgerError):
    """Unknown flag, or a review transition that is not allowed."""
