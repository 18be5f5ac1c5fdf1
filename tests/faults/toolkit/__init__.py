"""Fault-injection toolkit for the Chimera message bus tests.

* ``proxy.TcpProxy``: an in-process TCP proxy that drops, stalls, cuts and refuses.
* ``broker``: ``rabbitmqctl`` helpers (close connections, restart the app, memory alarm).
* ``ledger.Ledger``: per-message outcomes of a scenario and the no-loss invariants.

Independent of the library under test (``messaging``): it only speaks TCP and the CLI.
"""

from . import broker
from .ledger import InvariantError, Ledger, Result, format_table, load_results, print_table
from .proxy import TcpProxy

__all__ = [
    "InvariantError",
    "Ledger",
    "Result",
    "TcpProxy",
    "broker",
    "format_table",
    "load_results",
    "print_table",
]
