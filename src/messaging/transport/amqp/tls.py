"""TLS for AMQP connections: verification on by default, and the errors that explain it.

The chain and the host name are always verified: against
``RABBITMQ__TLS_CA_FILE`` when set, else the system's trust store. The name
checked is each node's own host name, or ``RABBITMQ__TLS_SERVER_NAME`` for
every node when the certificate names something else (a load balancer's
name, say). There is deliberately no switch to turn verification off.
"""

from __future__ import annotations

import ssl
from typing import Any

from messaging.config import RabbitMQConfig
from messaging.errors import ConfigurationError


class _ServerNameContext(ssl.SSLContext):
    """An SSLContext that verifies one fixed host name, whatever host it connects to.

    asyncio passes the host it dials as ``server_hostname``; aio-pika offers no
    way to pass another, so the context substitutes it where the TLS object is
    made.
    """

    server_name: str

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return super().wrap_bio(incoming, outgoing, server_side, self.server_name, session)


def client_context(config: RabbitMQConfig) -> ssl.SSLContext:
    """The verifying client context for ``config``'s TLS settings.

    Raises :class:`ConfigurationError` when a certificate, key or CA file
    cannot be loaded (wrong format, wrong key password).
    """
    context: ssl.SSLContext
    if config.tls_server_name:
        named = _ServerNameContext(ssl.PROTOCOL_TLS_CLIENT)
        named.server_name = config.tls_server_name
        context = named
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        if config.tls_ca_file is not None:
            context.load_verify_locations(cafile=str(config.tls_ca_file))
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigurationError(
            f"RABBITMQ__TLS_CA_FILE={str(config.tls_ca_file)!r} could not be loaded as PEM "
            f"CA certificates: {exc}"
        ) from None
    if config.tls_cert_file is not None and config.tls_key_file is not None:
        password = (
            config.tls_key_password.get_secret_value()
            if config.tls_key_password is not None
            else None
        )
        try:
            context.load_cert_chain(
                str(config.tls_cert_file), str(config.tls_key_file), password=password
            )
        except (ssl.SSLError, OSError) as exc:
            raise ConfigurationError(
                f"the client certificate RABBITMQ__TLS_CERT_FILE={str(config.tls_cert_file)!r} "
                f"with RABBITMQ__TLS_KEY_FILE={str(config.tls_key_file)!r} could not be loaded "
                f"(wrong format, a key that does not match, or a wrong "
                f"RABBITMQ__TLS_KEY_PASSWORD): {type(exc).__name__}"
            ) from None
    return context


def verification_failure(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification error behind ``exc``, if that is what it is."""
    seen: set[int] = set()
    current: Any = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return ssl.SSLCertVerificationError(text)
    return None
