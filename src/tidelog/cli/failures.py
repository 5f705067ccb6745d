"""The two ways a command fails, by exit code: the command line was wrong (2), or running it was (1)."""

from __future__ import annotations

USAGE = 2
"""Exit code of bad usage: the arguments (or TIDELOG_* variables) ask for something meaningless."""
FAILED = 1
"""Exit code of a failure while running: the broker is unreachable or refuses, a file, directory or
topic named is missing, a config file is invalid, the input does not fit the arguments."""


class UsageError(Exception):
    """The command line itself is wrong: exit 2, found before anything is done."""


class CommandError(Exception):
    """The command could not do its work (what the CLI finds itself; the library raises TidelogError): exit 1."""
