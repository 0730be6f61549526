"""The ``nnsig`` command line: ``info``, ``analyze``, ``report``, ``view``, ``export``, ``evaluate``.

:mod:`~nnsig_core.cli.main` holds the argument parser and the entry point
(``nnsig = "nnsig_core.cli:main"``, and ``python -m nnsig_core``),
:mod:`~nnsig_core.cli.commands` the subcommands, :mod:`~nnsig_core.cli.format`
their plain-text tables. Imports point one way: main -> commands -> format.
``nnsig info`` imports neither scikit-learn nor the analysis: the commands
that need them import them when they run.
"""

from nnsig_core.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
