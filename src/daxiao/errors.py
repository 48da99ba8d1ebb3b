"""One exception type for mistakes the user can fix; the CLI prints its message as one line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DaxiaoError(ValueError):
    """Bad input: a path, name, value or file the user handed us. The message says what and how to fix it."""


def did_you_mean(value: str, choices: Iterable[str], n: int = 3) -> str:
    """' Did you mean: a, b?' for the closest choices, or '' when nothing is close."""
    close = difflib.get_close_matches(str(value), list(choices), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def check_choice(what: str, value: str, choices: Iterable[str]) -> str:
    """Return `value` if it is one of `choices`, else raise a DaxiaoError listing them."""
    choices = list(choices)
    if value not in choices:
        raise DaxiaoError(
            f"{what} must be one of {', '.join(choices)} (received {value!r}).{did_you_mean(value, choices)}"
        )
    return value
