"""`chimera-bus console`: a web page on the bus, served by the bus's own process.

:mod:`.bus` reads and acts on the broker (agents, dead letters by group, a
conversation's timeline, replay and purge), :mod:`.web` is the ASGI app with
its JSON endpoints and the page in ``static/``. Needs the ``console`` extra.
"""

from messaging.console.web import create_app

__all__ = ["create_app"]
