"""Session fixtures for the production tests: a TLS-only node and a 3-node cluster.

Each starts once per session, on loopback ports picked free, with its files in
``$CHIMERA_NODES/<name>`` (see :mod:`tests.production.nodes`), and is stopped
and removed at the end of the session whatever the tests did. They are started
only when a test asks for them, after a sweep of the nodes that an interrupted
run left behind.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from tests.production import nodes
from tests.production.nodes import Node

SERVER_NAME = "localhost"
"""The only name in the TLS node's certificate (not 127.0.0.1): the host-name tests rely on it."""
CLIENT_NAME = "chimera-client"
"""The CN of the client certificate: the user a certificate login logs in as."""
STRANGER_NAME = "chimera-stranger"
"""The CN of a client certificate no broker has a user for."""


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    """The private CA that signed the node's certificate."""
    other_ca: Path
    """A CA that signed nothing the node presents."""
    client_cert: Path
    client_key: Path
    """A client certificate whose CN is :data:`CLIENT_NAME`."""
    stranger_cert: Path
    stranger_key: Path
    """A client certificate from the same CA whose CN is :data:`STRANGER_NAME`."""


@pytest.fixture(scope="session")
def production_root() -> Path:
    """Where the nodes live, swept of those whose test run died before stopping them."""
    why_not = nodes.available()
    if why_not:
        pytest.fail(f"the production tests start their own RabbitMQ nodes, but {why_not}")
    root = nodes.default_root()
    for node in nodes.sweep(root):
        print(f"swept {node.nodename}, left running by an interrupted test run")
    return root


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA(organization_name="Chimera test CA")
    server = ca.issue_cert(SERVER_NAME, key_type=trustme.KeyType.RSA)
    client = ca.issue_cert(CLIENT_NAME, common_name=CLIENT_NAME, key_type=trustme.KeyType.RSA)
    stranger = ca.issue_cert(STRANGER_NAME, common_name=STRANGER_NAME, key_type=trustme.KeyType.RSA)
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    trustme.CA(organization_name="Someone else").cert_pem.write_to_path(
        str(folder / "other-ca.pem")
    )
    server.private_key_pem.write_to_path(str(folder / "server.key"))
    with (folder / "server.pem").open("wb") as out:
        for blob in server.cert_chain_pems:
            out.write(blob.bytes())
    client.private_key_pem.write_to_path(str(folder / "client.key"))
    client.cert_chain_pems[0].write_to_path(str(folder / "client.pem"))
    stranger.private_key_pem.write_to_path(str(folder / "stranger.key"))
    stranger.cert_chain_pems[0].write_to_path(str(folder / "stranger.pem"))
    return TlsFiles(
        ca=folder / "ca.pem",
        other_ca=folder / "other-ca.pem",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
        stranger_cert=folder / "stranger.pem",
        stranger_key=folder / "stranger.key",
    )


def _tls_options(tls_files: TlsFiles) -> str:
    """rabbitmq.conf lines for a TLS listener with our CA, asking clients for a certificate."""
    folder = tls_files.ca.parent
    return (
        f"ssl_options.cacertfile = {tls_files.ca}\n"
        f"ssl_options.certfile = {folder / 'server.pem'}\n"
        f"ssl_options.keyfile = {folder / 'server.key'}\n"
        "ssl_options.verify = verify_peer\n"
        "ssl_options.fail_if_no_peer_cert = false\n"
    )


@pytest.fixture(scope="session")
def tls_node(production_root: Path, tls_files: TlsFiles) -> Iterator[Node]:
    """A node that listens only on TLS, with a certificate for ``localhost`` from our CA."""
    config = _tls_options(tls_files)
    with nodes.single(production_root, prefix="chimera-tls", tls=True, extra_config=config) as node:
        yield node


@pytest.fixture(scope="session")
def certificate_login_node(production_root: Path, tls_files: TlsFiles) -> Iterator[Node]:
    """A TLS-only node that logs clients in by certificate alone (SASL EXTERNAL).

    It has a user named after :data:`CLIENT_NAME`, with a random password no
    test knows, and none for :data:`STRANGER_NAME`.
    """
    config = (
        _tls_options(tls_files)
        + "auth_mechanisms.1 = EXTERNAL\n"
        + "ssl_cert_login_from = common_name\n"
    )
    with nodes.single(
        production_root,
        prefix="chimera-certlogin",
        tls=True,
        extra_config=config,
        plugins=("rabbitmq_auth_mechanism_ssl",),
    ) as node:
        node.ctl("add_user", CLIENT_NAME, secrets.token_hex(16))
        node.ctl("set_permissions", "-p", "/", CLIENT_NAME, ".*", ".*", ".*")
        yield node


@pytest.fixture(scope="session")
def cluster(production_root: Path) -> Iterator[list[Node]]:
    """Three nodes clustered with ``join_cluster``, shared by every cluster test."""
    with nodes.cluster(production_root, size=3) as members:
        yield members
