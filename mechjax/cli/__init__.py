"""The `mechjax` command line (`main`), one module per subcommand group."""

from mechjax.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
