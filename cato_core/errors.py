"""The one error type for bad input: the CLIs turn it into one line and exit code 2."""


class InputError(ValueError):
    """Bad user input. ``str()`` names the file, the field and what was expected."""

    def __init__(self, source: str, field: str, expected: str):
        self.source, self.field, self.expected = source, field, expected
        super().__init__(f"{source}: {field}: {expected}")
