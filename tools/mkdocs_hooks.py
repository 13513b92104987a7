"""MkDocs hooks of the documentation site (``hooks:`` in mkdocs.yml).

The docstrings are written for Python's ``help()`` and for Sphinx-style readers: cross-references
as ``:class:`~acr_blob.BlobError``` roles and examples after ``Example::``. mkdocstrings renders
docstrings as Markdown, where a role comes out as literal text; this turns each role into a code
span linked to the object's API entry (through mkdocs-autorefs, when the object is documented)
and drops the reST ``::`` from example headings.
"""

from __future__ import annotations

import html
import re
from typing import Any

# What Markdown makes of :class:`~acr_blob.errors.BlobError`: the role, then a code span.
_ROLE = re.compile(r":(?:class|func|meth|attr|mod|exc|data|obj):<code>(?P<target>[^<]+)</code>")
# "Example::" (or any paragraph ending in "::") that introduces an indented code block.
_LITERAL_INTRO = re.compile(r"::</p>")


def _reference(match: re.Match[str]) -> str:
    target = html.unescape(match.group("target")).strip()
    shortened = target.startswith("~")
    path = target.lstrip("~")
    title = path.rsplit(".", 1)[-1] if shortened else path
    identifier = path if "." in path else f"acr_blob.{path}"
    return (
        f'<autoref identifier="{html.escape(identifier)}" optional>'
        f"<code>{html.escape(title)}</code></autoref>"
    )


def on_page_content(page_html: str, **kwargs: Any) -> str:
    """Rewrite reST roles and literal-block markers in the rendered page."""
    page_html = _ROLE.sub(_reference, page_html)
    return _LITERAL_INTRO.sub(":</p>", page_html)
