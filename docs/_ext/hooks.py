"""MkDocs hooks of nnsig's documentation (``mkdocs.yml``, ``hooks:``).

``<!-- nnsig-cli-help -->`` in a page becomes the help of the ``nnsig`` command
and of each subcommand, taken from the real argument parser, so the command
reference cannot drift from the code.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

MARKER = "<!-- nnsig-cli-help -->"


def _help(parser: argparse.ArgumentParser) -> str:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "90"  # argparse wraps to the terminal's width
    try:
        return parser.format_help().rstrip()
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def cli_help() -> str:
    """Markdown: ``nnsig --help``, then one section per subcommand."""
    from nnsig_core.cli import build_parser

    parser = build_parser()
    parts = ["## `nnsig`", "", "```text", _help(parser), "```"]
    for action in parser._subparsers._group_actions:  # argparse keeps subcommands there
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                parts += ["", f"## `nnsig {name}`", "", "```text", _help(sub), "```"]
    return "\n".join(parts)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Fill the CLI marker."""
    return markdown.replace(MARKER, cli_help()) if MARKER in markdown else markdown
