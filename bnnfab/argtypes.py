"""argparse types shared by every command line of bnnfab (the CLI, ``bnnfab train``, ``report``,
``explore``, ``run-board``): each refuses a bad value with one line naming the rule and the value."""

from __future__ import annotations

import argparse
import math

__all__ = ["int_type", "whole", "positive", "positive_number"]


def int_type(minimum: int, rule: str, none_words: tuple[str, ...] = ()):
    """A whole number >= ``minimum`` (or None for one of ``none_words``); else ``"{rule}, not 'x'"``."""

    def parse(text: str):
        if text.lower() in none_words:
            return None
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"{rule}, not {text!r}")
        return value

    return parse


whole = int_type(0, "must be a whole number >= 0")
positive = int_type(1, "must be a positive whole number")


def positive_number(unit: str = ""):
    """A finite real number > 0 (``unit`` names it in the message: ``"MHz"``, ``"seconds"``)."""
    what = f"a positive number of {unit}" if unit else "a positive number"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not 0 < value < math.inf:
            raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}")
        return value

    return parse
