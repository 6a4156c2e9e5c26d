"""One exception type for bad user input, so every CLI can turn it into a one-line error and exit 2."""


class UsageError(ValueError):
    """Bad input from the user (unknown name, out-of-range value, missing data). Message is one line."""


def check_choice(kind: str, value, choices) -> None:
    """Raise a UsageError naming the valid choices when `value` is not one of them."""
    choices = list(choices)
    if value not in choices:
        raise UsageError(f"unknown {kind} {value!r}; valid choices: {', '.join(map(str, choices))}")


class DivergedError(RuntimeError):
    """A search whose loss became NaN or infinite: it stops instead of producing a network."""
