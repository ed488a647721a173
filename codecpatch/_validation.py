"""Small argument checks shared by the option dataclasses."""

from __future__ import annotations

from typing import get_args


def check_choice(name: str, value: object, literal: object) -> None:
    """Raise ValueError naming ``name`` and the allowed values when ``value`` is not one of ``literal``'s."""
    allowed = get_args(literal)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
