"""Session fixtures for the production tests: a TLS-only node and a 3-node cluster.

Each starts once per session, on loopback ports picked free, with its files in
a temp folder, and is stopped at the end of the session whatever the tests did.
They are started only when a test asks for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from tests.production import nodes
from tests.production.nodes import Node

SERVER_NAME = "localhost"
"""The only name in the TLS node's certificate (not 127.0.0.1): the host-name tests rely on it."""


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    """The private CA that signed the node's certificate."""
    other_ca: Path
    """A CA that signed nothing the node presents."""
    client_cert: Path
    client_key: Path


@pytest.fixture(scope="session")
def production_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    why_not = nodes.available()
    if why_not:
        pytest.fail(f"the production tests start their own RabbitMQ nodes, but {why_not}")
    return tmp_path_factory.mktemp("rabbit-nodes")


@pytest.fixture(scope="session")
def tls_files(production_root: Path) -> TlsFiles:
    folder = production_root / "tls"
    folder.mkdir()
    ca = trustme.CA(organization_name="Chimera test CA")
    server = ca.issue_cert(SERVER_NAME, key_type=trustme.KeyType.RSA)
    client = ca.issue_cert("chimera-client", key_type=trustme.KeyType.RSA)
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
    return TlsFiles(
        ca=folder / "ca.pem",
        other_ca=folder / "other-ca.pem",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
    )


@pytest.fixture(scope="session")
def tls_node(production_root: Path, tls_files: TlsFiles) -> Iterator[Node]:
    """A node that listens only on TLS, with a certificate for ``localhost`` from our CA."""
    folder = tls_files.ca.parent
    config = (
        f"ssl_options.cacertfile = {tls_files.ca}\n"
        f"ssl_options.certfile = {folder / 'server.pem'}\n"
        f"ssl_options.keyfile = {folder / 'server.key'}\n"
        "ssl_options.verify = verify_peer\n"
        "ssl_options.fail_if_no_peer_cert = false\n"
    )
    with nodes.single(production_root, prefix="chimera-tls", tls=True, extra_config=config) as node:
        yield node


@pytest.fixture(scope="session")
def cluster(production_root: Path) -> Iterator[list[Node]]:
    """Three nodes clustered with ``join_cluster``, shared by every cluster test."""
    with nodes.cluster(production_root, size=3) as members:
        yield members
