# Python bindings of messages.proto beside this file (package chimera.v1).
#
# messages_pb2.py and messages_pb2.pyi are generated: never edit them by hand.
# After changing messages.proto (proto/messages.proto links to it), regenerate with
#
#     python scripts/generate_protos.py
#
# tests/unit/test_generated_fresh.py fails while the checked-in files are stale.
"""Generated protobuf messages of the Chimera bus: ``from messaging.generated import messages_pb2``."""

from messaging.generated import messages_pb2

__all__ = ["messages_pb2"]
