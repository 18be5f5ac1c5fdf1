"""Discovery: which agents are running, where, and what they take and send.

Design, the RabbitMQ way (no plugin, no management API, so that the
in-process broker does it too):

- Every subscriber and agent, once consuming, publishes an *announcement*
  (:class:`~messaging.discovery.card.AgentCard`, a small JSON object whose
  schema is :data:`~messaging.discovery.card.SCHEMA`, readable from any
  language) to the topic exchange ``chimera.discovery`` with routing key
  ``agent.announce``, and again every ``interval`` seconds (a heartbeat).
  On a clean stop it publishes ``agent.withdraw``.
- A listener (:class:`~messaging.discovery.directory.Directory`, and
  ``chimera-bus agents``) binds a temporary exclusive queue to ``agent.*``
  and builds its table from what it hears. It forgets an instance when
  :data:`~messaging.discovery.card.MISSED_HEARTBEATS` (3) of *its* intervals
  passed with no heartbeat: the interval travels in each announcement, and
  expiry is measured on the listener's own monotonic clock, so hosts need
  no agreement on time or settings. A crashed agent disappears within
  ``3 x interval`` (15 s by default).
- The exchange is durable and shared by every agent of the vhost (one name,
  whatever events exchange an agent uses; each card names its exchange).
  Announcements are transient, unconfirmed and not mandatory, and expire in
  the broker after ``3 x interval``: an announcement nobody hears is dropped,
  a slow listener never reads a stale one.

Why not per-instance queues and the management API: the management API is a
plugin, with its own credentials, that the in-process broker does not have.

Why off by default (``DISCOVERY__ENABLED=true`` turns it on): the cost is small
(a channel, one exchange declaration, one message every ``interval`` seconds
per running subscriber), but it declares an exchange the agent's own
configuration did not name, and a broker user limited to its own exchanges
and queues ("Who may write where" in the README) may not declare or write
it. Discovery publishing never fails or slows an agent: it runs in a task of
its own on a channel of its own; a failure is logged (once per streak) and
counted in ``chimera_discovery_failures_total``.

A listener that starts late knows every live instance after one interval
(it hears their next heartbeat); ``chimera-bus agents`` listens that long.
"""

from messaging.discovery.card import AgentCard
from messaging.discovery.directory import Directory, listen

__all__ = ["AgentCard", "Directory", "listen"]
