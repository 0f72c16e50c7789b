"""A griffe extension for the API reference: Sphinx roles in docstrings become code.

The docstrings name other objects the Sphinx way (``:class:`SyncModel```,
``:meth:`~replicator.Replicator.sync```), which Markdown would show as written.
mkdocstrings loads this file (``mkdocs.yml``) and each role becomes a code span
of the name, shortened as ``~`` asks.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|meth|func|mod|data|attr|exc|obj):`(~?)\.?([^`]+)`")


def plain(docstring: str) -> str:
    """``docstring`` with each Sphinx role written as a code span of its target."""

    def code(match: re.Match[str]) -> str:
        short, target = match.groups()
        return f"`{target.rsplit('.', 1)[-1] if short else target}`"

    return ROLE.sub(code, docstring)


class SphinxRoles(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain(obj.docstring.value)
