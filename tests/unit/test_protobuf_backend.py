"""protobuf's upb backend (C) is the one the bus runs on, not the pure-Python fallback.

Every publish encodes and every delivery decodes a message; the pure-Python
backend is several times slower at both. protobuf picks upb by default, but an
old wheel, an odd platform or ``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python``
would silently fall back.
"""

from __future__ import annotations

from google.protobuf.internal import api_implementation

import messaging
from messaging.generated.messages_pb2 import QueryRequest


def test_upb_backend_is_loaded() -> None:
    assert messaging.__name__ == "messaging"  # imported: whatever it pulls in is loaded
    assert api_implementation.Type() == "upb"


def test_generated_messages_are_upb_messages() -> None:
    # upb's message classes live in the C extension module google._upb.
    assert type(QueryRequest).__module__.startswith("google._upb")
