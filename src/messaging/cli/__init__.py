"""The ``chimera-bus`` command: status, live traffic, publishing and dead letters.

The CLI's own dependencies (typer, rich) come with the ``cli`` extra,
``pip install 'chimera-messaging[cli]'``: an agent never needs them. This
module imports none of them, so that ``chimera-bus`` without the extra says
what to install instead of failing with a traceback. The commands live in
:mod:`messaging.cli._app`.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer

EXTRA = "cli"
INSTALL_HINT = f"pip install 'chimera-messaging[{EXTRA}]'"
# What the cli extra brings (and what those bring); a missing one means the extra is missing.
_EXTRA_MODULES = frozenset({"typer", "rich", "click", "shellingham", "pygments", "markdown_it"})


def missing_extra(exc: ModuleNotFoundError) -> bool:
    return (exc.name or "").partition(".")[0] in _EXTRA_MODULES


def main() -> None:
    """The ``chimera-bus`` entry point."""
    try:
        from messaging.cli._app import app
    except ModuleNotFoundError as exc:
        if not missing_extra(exc):
            raise
        sys.stderr.write(
            f"error: chimera-bus needs the {EXTRA!r} extra (module {exc.name!r} is not "
            f"installed). Install it with: {INSTALL_HINT}\n"
        )
        raise SystemExit(2) from None
    app()


def __getattr__(name: str) -> Any:
    # ``from messaging.cli import app`` keeps working, imported only when asked for.
    if name == "app":
        from messaging.cli._app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    app: typer.Typer

__all__ = ["EXTRA", "INSTALL_HINT", "app", "main"]
