"""Loss names as settings: Keras spellings accepted, arguments checked (no torch needed)."""

from __future__ import annotations

from ..errors import DaxiaoError, check_choice

LOSSES = ("cross-entropy", "label-smoothing", "mse", "focal")
ALIASES = {"ce": "cross-entropy", "crossentropy": "cross-entropy", "sparse_categorical_crossentropy": "cross-entropy",
           "categorical_crossentropy": "cross-entropy", "mean_squared_error": "mse", "focal-loss": "focal"}


def parse_loss(spec: str) -> tuple[str, float | None]:
    """'focal=1.5' -> ('focal', 1.5); Keras names are accepted as aliases."""
    name, _, arg = spec.partition("=")
    name = ALIASES.get(name.strip().lower(), name.strip().lower())
    check_choice("loss", name, LOSSES)
    if not arg:
        return name, None
    try:
        value = float(arg)
    except ValueError:
        raise DaxiaoError(f"loss {name} takes a number after '=' (received {arg!r}).") from None
    if name == "label-smoothing" and not 0 <= value < 1:
        raise DaxiaoError(f"label-smoothing must be in [0, 1) (received {value}).")
    if name == "focal" and value < 0:
        raise DaxiaoError(f"focal gamma must be >= 0 (received {value}).")
    if name in ("cross-entropy", "mse"):
        raise DaxiaoError(f"loss {name} takes no argument (received {spec!r}).")
    return name, value
