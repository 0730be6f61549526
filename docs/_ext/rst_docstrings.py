"""A Griffe extension for the API reference: nnsig's docstrings in Markdown terms.

nnsig's docstrings are numpy-style with a few reStructuredText habits that
mkdocstrings (which reads docstrings as Markdown) would print literally:

* Sphinx roles (``:func:`capture```, ``:class:`~nnsig_core.store.ActivationStore```)
  become optional cross-references: a link when the target is documented in
  the reference, plain code otherwise (never a warning);
* doctest lines (``>>> ...``), which Markdown would read as block quotes,
  become ``pycon`` code blocks;
* a paragraph ending in ``::`` before an indented block ends in ``:`` (the
  indented block is already a Markdown code block);
* a closing paragraph written after a ``Parameters`` (or ``Attributes``)
  section without a heading of its own, which numpy style would read as one
  more parameter, gets a ``Notes`` heading;
* a module-level constant of the public API, which has no docstring, gets the
  ``#:`` comment above it (Sphinx's convention), else a line from
  ``_CONSTANTS`` below, so that it is listed in the reference.

The docstrings themselves are untouched: this runs on Griffe's copy while the
site is built (``mkdocs.yml``, ``plugins.mkdocstrings...extensions``).
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

_ROLE = re.compile(
    r":(?:py:)?(?P<role>func|class|meth|mod|attr|data|exc|obj|const|term|ref|math):"
    r"`(?P<body>[^`]+)`"
)
_EXPLICIT = re.compile(r"^(?P<title>.*?)\s*<(?P<target>[^<>]+)>$")
_PACKAGES = ("nnsig_core", "nnsig_torch", "nnsig_keras")

#: What the public constants without a ``#:`` comment are, by public name.
_CONSTANTS = {
    "FORMAT_VERSION": "The store format this version writes and reads (the root attribute "
                      "`nnsig.format_version`).",
    "BASELINES": "The baselines `baseline_scores` computes, by name.",
    "TASKS": "The tasks `evaluate` measures the scores on.",
    "METRICS": "The metrics `evaluate` reports for each score and task.",
    "MARKER": "The file that marks a directory as an nnsig report.",
}


def _identifier(obj: griffe.Object, target: str) -> str | None:
    """The full path of ``target`` as written in ``obj``'s docstring, if it can be found."""
    target = target.strip().rstrip("()")
    if target.split(".")[0] in _PACKAGES:
        return target
    head, _, rest = target.partition(".")
    scope: Any = obj
    while scope is not None:
        try:
            path = scope.resolve(head)
        except (griffe.NameResolutionError, griffe.AliasResolutionError, KeyError):
            scope = scope.parent
            continue
        full = f"{path}.{rest}" if rest else path
        return full if full.split(".")[0] in _PACKAGES else None
    return None


def _function_not_module(obj: griffe.Object, identifier: str, role: str) -> str:
    """``nnsig_core.capture`` is both a subpackage and the function it exports (Python's
    attribute is the function; Griffe sees the subpackage): a function role means the
    function, ``nnsig_core.capture.capture``."""
    if role not in ("func", "meth", "class"):
        return identifier
    try:
        target = obj.modules_collection[identifier]
    except KeyError:
        return identifier
    last = identifier.rsplit(".", 1)[-1]
    if target.is_module and last in target.members:
        return f"{identifier}.{last}"
    return identifier


def _role(obj: griffe.Object, match: re.Match[str]) -> str:
    body = match["body"].strip()
    if match["role"] == "math":  # no MathJax (nothing loaded from a CDN): the formula as code
        return f"<code>{html.escape(body)}</code>"
    explicit = _EXPLICIT.match(body)
    if explicit:
        title, target = explicit["title"], explicit["target"]
    else:
        target = body.lstrip("~")
        title = target.rsplit(".", 1)[-1] if body.startswith("~") else target
        if match["role"] in ("func", "meth") and not title.endswith(")"):
            title += "()"
    code = f"<code>{html.escape(title)}</code>"
    identifier = _identifier(obj, target.lstrip("~"))
    if identifier is None:
        return code
    identifier = _function_not_module(obj, identifier, match["role"])
    return f'<autoref identifier="{html.escape(identifier)}" optional>{code}</autoref>'


def _doctests(text: str) -> str:
    """Runs of ``>>>`` lines (with their ``...`` continuations) as ``pycon`` blocks."""
    out: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith(">>>"):
            indent = line[: len(line) - len(line.lstrip())]
            block = []
            while i < len(lines) and lines[i].strip() and lines[i].startswith(indent):
                block.append(lines[i][len(indent):])
                i += 1
            if out and out[-1].strip():
                out.append("")
            out += [f"{indent}```pycon", *(indent + b for b in block), f"{indent}```"]
            if i < len(lines) and lines[i].strip():
                out.append("")
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def _literal_blocks(text: str) -> str:
    """``Typical use::`` before an indented block reads ``Typical use:``."""
    return re.sub(r"(?m)(\S)::[ \t]*$(?=\n[ \t]*\n[ \t]+\S)", r"\1:", text)


_ITEM_SECTIONS = {"Parameters", "Other Parameters", "Attributes", "Receives"}
_ITEM = re.compile(r"^\*{0,2}\w+(\s*,\s*\*{0,2}\w+)*(\s*:.*)?$")


def _closing_notes(text: str) -> str:
    """A paragraph after the items of a numpy ``Parameters`` section, at the items'
    indentation, that is no item (``name`` or ``name : type``): under a ``Notes`` heading."""
    lines = text.split("\n")
    section = None
    out: list[str] = []
    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and not line[0].isspace() and re.fullmatch(r"-{3,}", nxt.strip()):
            section = line.strip()
        elif (section in _ITEM_SECTIONS and line.strip() and not line[0].isspace()
              and i > 0 and not lines[i - 1].strip() and not re.fullmatch(r"-{3,}", line)
              and not _ITEM.match(line)):
            out += ["Notes", "-----"]
            section = "Notes"
        out.append(line)
    return "\n".join(out)


def markdown_docstring(obj: griffe.Object, text: str) -> str:
    """``text`` (a docstring of ``obj``) with the rewrites above."""
    text = _closing_notes(_literal_blocks(_doctests(text)))
    return _ROLE.sub(lambda m: _role(obj, m), text)


def _comment_above(obj: griffe.Object) -> str | None:
    """The ``#:`` comment lines right above a module-level attribute, if any."""
    try:
        lines = obj.lines_collection[obj.filepath]
    except (KeyError, TypeError):
        return None
    found: list[str] = []
    i = (obj.lineno or 1) - 2
    while i >= 0 and lines[i].lstrip().startswith("#:"):
        found.insert(0, lines[i].lstrip()[2:].strip())
        i -= 1
    return " ".join(found) or None


class RstDocstrings(griffe.Extension):
    """Rewrites every loaded object's docstring (see the module docstring)."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Every member of a package (Griffe calls this once per object)."""
        if obj.docstring is None and obj.is_attribute and obj.parent is not None \
                and obj.parent.is_module:
            text = _comment_above(obj) or _CONSTANTS.get(obj.name)
            if text:
                obj.docstring = griffe.Docstring(text, parent=obj)
        if obj.docstring is not None:
            obj.docstring.value = markdown_docstring(obj, obj.docstring.value)

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """The package itself, for which Griffe calls no ``on_object``."""
        self.on_object(obj=pkg)
