"""Progress lines on stderr, so stdout stays clean for ``env`` and ``status``."""

import sys


def say(message: str) -> None:
    """Print one ``[stack]`` progress line; stderr keeps ``env`` output pipeable."""
    print(f"[stack] {message}", file=sys.stderr, flush=True)
