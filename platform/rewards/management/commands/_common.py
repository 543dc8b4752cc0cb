"""Shared bits of the rewards commands: platform errors become CommandErrors with the same message."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.core.management.base import CommandError
from registry.errors import PlatformError
from registry.models import Federation
from registry.selectors import federation_get


@contextmanager
def platform_errors() -> Iterator[None]:
    try:
        yield
    except PlatformError as exc:
        raise CommandError(f"{exc.code}: {exc.message}") from None


def federation_arg(slug: str) -> Federation:
    with platform_errors():
        return federation_get(slug=slug)
