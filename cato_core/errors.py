"""The one error type for bad input: the CLIs turn it into one line and exit code 2."""


class InputError(ValueError):
    """Bad user input. ``str()`` names the file, the field and what was expected."""

    def __init__(self, source: str, field: str, expected: str):
        self.source, self.field, self.expected = source, field, expected
        super().__init__(f"{source}: {field}: {expected}")


def exits_on_input_error(fn):
    """For CLI commands: an InputError ends in one line on stderr and exit code 2, no traceback."""
    import functools
    import sys

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
