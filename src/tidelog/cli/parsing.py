"""argparse as every `tidelog` command uses it: one-line errors, defaults in --help, the shared options.

Durations are milliseconds and named `-ms`, sizes bytes and named `-bytes`, like the config settings;
an old spelling stays as a hidden alias that says it is deprecated.
"""

from __future__ import annotations

import argparse
import sys

from .failures import USAGE


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (exit 2), not the usage block."""

    global_options: argparse._ArgumentGroup  # a command's copy of the options also accepted before it

    def error(self, message: str):
        self.exit(USAGE, f"tidelog: error: {message} (see `{self.prog} --help`)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: ...)" to an option's help, unless it has no default worth printing (None,
    False) or its help already says what happens without it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action) or ""


def add_command(commands, name: str, summary: str, description: str | None = None) -> Parser:
    """A (sub)command's parser, with the shared formatter and the log options also accepted after it."""
    parser = commands.add_parser(
        name, help=summary, description=description or summary[:1].upper() + summary[1:], formatter_class=HelpFormatter
    )
    assert isinstance(parser, Parser), "the root parser makes its subparsers Parsers"
    parser.global_options = parser.add_argument_group("global options (also accepted before the command)")
    add_log_options(parser.global_options, argparse.SUPPRESS)
    return parser


LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


def add_log_options(parser, default) -> None:
    """--log-format and --log-level: global, so accepted before the command and after it (there with a
    suppressed default, so that one given before the command is not overwritten)."""
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=default,
        help="log lines on stderr as text or JSON objects (default: $TIDELOG_LOG_FORMAT, else text)",
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=default,
        help="least severe log lines shown (default: $TIDELOG_LOG_LEVEL, else info for "
        "serve, warning for the other commands)",
    )


def add_format_option(parser: argparse.ArgumentParser, formats=("text", "json"), what: str = "") -> None:
    """--format, the one way to ask for JSON. `--json` stays as a hidden alias of `--format json`."""
    parser.add_argument("--format", choices=formats, default="text", help=what or "text for people, json for programs")
    parser.add_argument("--json", dest="format", action="store_const", const="json", help=argparse.SUPPRESS)


class _DeprecatedAlias(argparse.Action):
    """An old spelling of an option: converts its value to the new option's unit and says it is deprecated."""

    def __init__(self, option_strings, dest, replacement: str = "", scale: float = 1, **kwargs) -> None:
        self.replacement = replacement
        self.scale = scale
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, value, option_string=None) -> None:
        print(f"tidelog: warning: {option_string} is deprecated; use {self.replacement}", file=sys.stderr)
        setattr(namespace, self.dest, value * self.scale if self.scale != 1 else value)


def add_deprecated_alias(
    parser: argparse.ArgumentParser, old: str, new: str, dest: str, value_type, scale: float = 1
) -> None:
    """Keep `old` working (hidden from --help): its value, times `scale`, goes where `new` puts its own."""
    parser.add_argument(
        old, dest=dest, type=value_type, action=_DeprecatedAlias, replacement=new, scale=scale, metavar="VALUE"
    )
