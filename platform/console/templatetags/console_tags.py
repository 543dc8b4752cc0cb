"""Small formatting filters for the console templates."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def pct(value, digits: int = 1) -> str:
    """0.1234 -> '12.3%' ('-' for None)."""
    if value is None:
        return "-"
    return f"{float(value) * 100:.{int(digits)}f}%"


@register.filter
def tint(colour: str, alpha: float) -> str:
    """'#4e79a7', 0.3 -> 'rgba(78, 121, 167, 0.3)'."""
    colour = (colour or "#888888").lstrip("#")
    r, g, b = (int(colour[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r}, {g}, {b}, {float(alpha)})"


@register.filter
def get(mapping: dict, key):
    return mapping.get(key) if mapping else None


@register.filter
def short_hash(value: str | None, length: int = 12) -> str:
    return (value or "")[: int(length)] or "-"
