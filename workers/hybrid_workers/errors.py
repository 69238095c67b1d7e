"""Errors shared by the workers: a user-facing error carries a one-line, actionable message."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

E = TypeVar("E", bound=StrEnum)


class UserError(Exception):
    """Bad input from a user (flag, path, request): the message says what was wrong and what to do.

    The command line prints it as one line and exits with status 2; the HTTP API maps it to a 4xx.
    """


def closed_choice(flag: str, kind: type[E], value: object) -> E:
    """`value` as a member of the StrEnum `kind`, or a UserError naming the flag, value and choices."""
    try:
        return kind(str(value))
    except ValueError:
        choices = ", ".join(member.value for member in kind)
        raise UserError(f"{flag} {value!r}: use one of {choices}") from None
