"""Extra RabbitMQ nodes on loopback for the cluster and TLS tests: start, cluster, break, stop.

The recipe is ``scripts/rabbit-node``'s, in Python so fixtures can drive it: the
Debian package's own server script (``/usr/lib/rabbitmq/bin/rabbitmq-server``,
not the wrapper on PATH, which switches to the rabbitmq user) runs as root with
per-node ``RABBITMQ_*`` variables; every file of a node lives under one temp
folder. Nodes of one group share a ``HOME`` (so one Erlang cookie), and
``rabbitmqctl`` runs with the same ``HOME``. Everything stays on loopback: AMQP
listeners on ``127.0.0.1:PORT``, Erlang distribution bound to 127.0.0.1. Ports
are picked free at start-up, so two test runs on one machine never collide, and
the node on 5672 is never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, overload

BIN = Path("/usr/lib/rabbitmq/bin")
SYSTEM_COOKIE = Path("/var/lib/rabbitmq/.erlang.cookie")


class NodeError(RuntimeError):
    """A node did not start, stop or answer as asked."""


def available() -> str | None:
    """Why extra nodes cannot run here, or None when they can."""
    if not (BIN / "rabbitmq-server").exists():
        return f"{BIN / 'rabbitmq-server'} is not installed"
    return None


def port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(low: int = 20000, high: int = 30000) -> int:
    """A port nothing listens on, from a range where port+10010 still fits (the CLI's
    distribution ports are the node's + 10000..10010)."""
    for _ in range(200):
        port = random.randint(low, high)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        if not port_open(port):
            return port
    raise NodeError(f"no free port in {low}-{high}")


@dataclass
class Node:
    """One RabbitMQ node: ``<name>@localhost`` on ``127.0.0.1:<port>``."""

    name: str
    root: Path
    home: Path
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    extra_config: str = ""
    tls: bool = False
    plugins: tuple[str, ...] = ()
    """Plugins to enable (beyond the broker itself), e.g. ``rabbitmq_auth_mechanism_ssl``."""

    @property
    def nodename(self) -> str:
        return f"{self.name}@localhost"

    @property
    def base(self) -> Path:
        return self.root / self.name

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        base = self.base
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("RABBITMQ_", "ERL_"))
        }
        env.update(
            {
                "HOME": str(self.home),
                "RABBITMQ_NODENAME": self.nodename,
                "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
                "RABBITMQ_LOG_BASE": str(base / "log"),
                "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
                "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
                "RABBITMQ_PID_FILE": str(base / "pid"),
                "ERL_EPMD_ADDRESS": "127.0.0.1",
                "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            }
        )
        return env

    def write_files(self) -> None:
        base = self.base
        for folder in (base / "mnesia", base / "log"):
            folder.mkdir(parents=True, exist_ok=True)
        if self.tls:
            listeners = f"listeners.tcp = none\nlisteners.ssl.default = 127.0.0.1:{self.port}\n"
        else:
            listeners = f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
        (base / "rabbitmq.conf").write_text(
            listeners
            + "loopback_users = none\n"
            + "cluster_partition_handling = pause_minority\n"
            + self.extra_config
        )
        (base / "enabled_plugins").write_text(f"[{','.join(self.plugins)}].\n")
        (base / "rabbitmq-env.conf").write_text("")

    # -- lifecycle ---------------------------------------------------------------------------

    def launch(self) -> None:
        """Start the Erlang node and the broker app in the background (see :meth:`wait`)."""
        if port_open(self.port):
            raise NodeError(f"something already answers on {self.address}")
        self.write_files()
        subprocess.run(
            [str(BIN / "rabbitmq-server"), "-detached"],
            env=self.env(),
            check=True,
            capture_output=True,
            timeout=60,
        )

    def wait(self, timeout: float = 120.0) -> None:
        """Wait until the broker app runs and its listener accepts connections."""
        deadline = time.monotonic() + timeout
        # await_startup needs the Erlang node up first: wait for it to answer a ping.
        while self.ctl("ping", timeout=30, check=False) is None:
            if time.monotonic() > deadline:
                raise NodeError(f"{self.nodename} did not come up within {timeout}s")
            time.sleep(0.5)
        self.ctl("await_startup", "--timeout", str(int(timeout)), timeout=timeout + 30)
        while not port_open(self.port):
            if time.monotonic() > deadline:
                raise NodeError(f"{self.nodename} booted but {self.address} is not open")
            time.sleep(0.1)

    @overload
    def ctl(self, *args: str, timeout: float = ..., check: Literal[True] = ...) -> str: ...

    @overload
    def ctl(self, *args: str, timeout: float = ..., check: Literal[False]) -> str | None: ...

    def ctl(self, *args: str, timeout: float = 60.0, check: bool = True) -> str | None:
        """``rabbitmqctl -n <node> <args>``: its stdout; with ``check=False``, None on failure."""
        cmd = [str(BIN / "rabbitmqctl"), "-n", self.nodename, "-q", *args]
        try:
            proc = subprocess.run(
                cmd, env=self.env(), capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise NodeError(f"{' '.join(cmd)} timed out after {timeout}s") from exc
        if proc.returncode != 0 and not check:
            return None
        if proc.returncode != 0:
            raise NodeError(
                f"{' '.join(args)} on {self.nodename} exited {proc.returncode}: "
                f"{(proc.stderr or proc.stdout).strip()[-2000:]}"
            )
        return proc.stdout

    def os_pid(self) -> int:
        pid_file = self.base / "pid"
        if pid_file.exists() and pid_file.read_text().strip():
            return int(pid_file.read_text().strip())
        out = self.ctl("eval", "list_to_integer(os:getpid()).")
        return int(out.strip())

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.wait()

    def kill9(self) -> None:
        """SIGKILL the node's Erlang VM: no goodbye to clients or peers."""
        pid = self.os_pid()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while _alive(pid):
            if time.monotonic() > deadline:
                raise NodeError(f"{self.nodename} (pid {pid}) survived SIGKILL")
            time.sleep(0.05)
        with contextlib.suppress(FileNotFoundError):
            (self.base / "pid").unlink()

    def stop(self) -> None:
        """Stop the whole node (best effort, then SIGKILL)."""
        try:
            self.ctl("stop", timeout=60)
        except NodeError:
            with contextlib.suppress(Exception):
                self.kill9()

    def queue_leader(self, queue: str) -> str:
        """The node that leads quorum queue ``queue`` (``name@host``)."""
        rows = json.loads(self.ctl("list_queues", "name", "leader", "--formatter", "json") or "[]")
        for row in rows:
            if row["name"] == queue:
                return str(row["leader"])
        raise NodeError(f"queue {queue} not found from {self.nodename}")

    def running_nodes(self) -> set[str]:
        status = json.loads(self.ctl("cluster_status", "--formatter", "json"))
        return set(status.get("running_nodes", []))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); its /proc status says so.
    with contextlib.suppress(OSError):
        status = Path(f"/proc/{pid}/status").read_text()
        if "\nState:\tZ" in status:
            return False
    return True


def shared_home(root: Path) -> Path:
    """A HOME with one Erlang cookie for a group of nodes and their ``rabbitmqctl``."""
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    cookie = home / ".erlang.cookie"
    if not cookie.exists():
        if SYSTEM_COOKIE.exists():
            shutil.copyfile(SYSTEM_COOKIE, cookie)
        else:
            cookie.write_text(secrets.token_hex(20).upper())
        cookie.chmod(0o400)
    return home


@contextlib.contextmanager
def cluster(root: Path, size: int = 3, prefix: str = "chimera-c") -> Iterator[list[Node]]:
    """``size`` nodes clustered with ``join_cluster``; all stopped at the end, whatever happens."""
    home = shared_home(root)
    tag = secrets.token_hex(3)
    nodes = [Node(f"{prefix}{n}-{tag}", root, home) for n in range(1, size + 1)]
    try:
        for node in nodes:  # boot in parallel: each takes seconds
            node.launch()
        for node in nodes:
            node.wait()
        first = nodes[0]
        for node in nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first.nodename)
            node.start_app()
        running = first.running_nodes()
        if running != {node.nodename for node in nodes}:
            raise NodeError(f"the cluster formed with {sorted(running)} only")
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@contextlib.contextmanager
def single(
    root: Path,
    *,
    prefix: str,
    tls: bool = False,
    extra_config: str = "",
    plugins: tuple[str, ...] = (),
) -> Iterator[Node]:
    """One node on its own (a TLS node); stopped at the end."""
    node = Node(
        f"{prefix}-{secrets.token_hex(3)}",
        root,
        shared_home(root),
        tls=tls,
        extra_config=extra_config,
        plugins=plugins,
    )
    try:
        node.launch()
        node.wait()
        yield node
    finally:
        node.stop()
