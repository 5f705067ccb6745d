"""The `tidelog` command line (entry point `tidelog.cli:main`): parsing and wiring, one module per command
group, each adding its own subparser and handler; app.py puts them together and maps failures to exit codes."""

from .app import build_parser, main

__all__ = ["build_parser", "main"]
