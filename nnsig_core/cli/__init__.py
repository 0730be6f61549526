"""The ``nnsig`` command line: the parser in :mod:`~nnsig_core.cli.main`, the subcommands in
:mod:`~nnsig_core.cli.commands`, their tables in :mod:`~nnsig_core.cli.format`.
"""

from nnsig_core.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
