"""The one exception type the launcher raises on purpose.

Every expected failure (port taken, wrong Java, download failure, service not
healthy) becomes a ``StackError`` whose first line names the cause, so the CLI
can print it without a traceback and exit non-zero.
"""


class StackError(Exception):
    """A failure the user can act on; the message's first line names the cause."""
