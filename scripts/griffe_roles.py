"""A Griffe extension: the docstrings' Sphinx roles become links in the API reference.

The code's docstrings cross-reference with Sphinx roles (``:class:`~messaging.X```),
which Markdown would show as literal text. A fully qualified target becomes a
cross-reference that mkdocs-autorefs resolves to the object's entry when the
reference renders it (and to plain code when it does not: internal helpers are
not documented); a short target (``:meth:`publish```) becomes code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|meth|func|mod|attr|exc|data|obj):`(~?)([\w.]+)(\(\))?`")


def _replace(match: re.Match[str]) -> str:
    tilde, target, call = match.group(1), match.group(2), match.group(3) or ""
    shown = (target.rsplit(".", 1)[-1] if tilde else target) + call
    if "." not in target:
        return f"`{shown}`"
    return f'<autoref identifier="{target}" optional><code>{shown}</code></autoref>'


class SphinxRoles(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_replace, obj.docstring.value)
