"""The shapes of the AMQP client that the layers above see.

Deliveries and message properties are aiormq's and pamqp's own objects (the
hot path copies nothing), but they are named here, so that nothing outside
:mod:`messaging.transport` imports the client.
"""

from aiormq.abc import DeliveredMessage as Delivery
from pamqp.commands import Basic

Properties = Basic.Properties

__all__ = ["Delivery", "Properties"]
