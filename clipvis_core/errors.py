"""User-facing errors: one line that says what is wrong and how to fix it.

``InputError`` marks bad input (never worth retrying); the CLI maps every ``ClipvisError`` to
exit code 2 and prints only its message.
"""


class ClipvisError(Exception):
    """Base class; ``str(err)`` is the one-line message shown to users."""


class InputError(ClipvisError, ValueError):
    """The request itself is wrong (video, vocabulary, options): retrying cannot help."""


class WeightsError(ClipvisError):
    """Checkpoint or CLIP weights missing, unknown or incompatible."""
