"""The one exception type vaelens raises for user mistakes.

Every message is a single line that says what was wrong and what to do about it; the CLI prints
it without a traceback.
"""


class VaelensError(ValueError):
    """Bad input, a missing or corrupt file, or an impossible request. The message says the fix."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a long command. The message says what was saved and how to resume.

    A ``KeyboardInterrupt``, so code that handles Ctrl-C keeps working.
    """
