"""argparse value types shared by the CLI and the scripts (messages say what was expected and what was given)."""

from __future__ import annotations

import argparse


def size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` → ``(width, height)``."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 346x260 (got {text!r})") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"width and height must be positive (got {text!r})")
    return w, h


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer (got {text!r})") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer (got {text!r})")
    return v
