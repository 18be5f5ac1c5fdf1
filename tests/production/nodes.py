"""Private RabbitMQ nodes on loopback: the one recipe behind ``scripts/rabbit-node`` and the
fixtures of the production tests (TLS nodes, a 3-node cluster).

The Debian package's own server script (``/usr/lib/rabbitmq/bin/rabbitmq-server``,
not the wrapper on PATH, which switches to the rabbitmq user) runs as root with
per-node ``RABBITMQ_*`` variables. Every file of a node lives in one folder,
``$CHIMERA_NODES/<name>`` (``/tmp/chimera-nodes/<name>`` by default): config,
data, logs, and a ``HOME`` whose Erlang cookie ``rabbitmqctl`` uses too. The
cookie is the system node's when it can be read, so the ``rabbitmqctl`` on PATH
can address a node with ``-n NAME@localhost``. Everything stays on loopback:
AMQP on ``127.0.0.1:PORT``, Erlang distribution bound to 127.0.0.1.

``node.json`` in the folder records the ports and the owner: the process that
started the node for a test run. A run that is interrupted (Ctrl-C twice, a
killed CI job) leaves its nodes running; :func:`sweep` stops and removes the
nodes whose owner is gone, and the production tests sweep before they start
theirs. A node started from the command line has no owner and runs until
``scripts/rabbit-node stop NAME``. The sweep never looks beyond nodes with such
a record, so the shared node on 5672 and the system's ``rabbit@`` node are out
of its reach.

Command line (``scripts/rabbit-node`` runs it)::

    python tests/production/nodes.py start|stop|env NAME [PORT]
    python tests/production/nodes.py sweep
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
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

BIN = Path("/usr/lib/rabbitmq/bin")
SYSTEM_COOKIE = Path("/var/lib/rabbitmq/.erlang.cookie")
SHARED_PORT = 5672
DIST_OFFSET = 20000
"""A command-line node's Erlang distribution port is its AMQP port + this."""
RECORD = "node.json"


class NodeError(RuntimeError):
    """A node did not start, stop or answer as asked."""


def available() -> str | None:
    """Why private nodes cannot run here, or None when they can."""
    if not (BIN / "rabbitmq-server").exists():
        return f"{BIN / 'rabbitmq-server'} is not installed"
    return None


def default_root() -> Path:
    return Path(os.environ.get("CHIMERA_NODES") or "/tmp/chimera-nodes")


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


def default_cookie() -> str:
    """The system node's Erlang cookie when readable (the ``rabbitmqctl`` on PATH then
    reaches private nodes too), else a fresh one."""
    with contextlib.suppress(OSError):
        return SYSTEM_COOKIE.read_text().strip()
    return secrets.token_hex(20).upper()


# -- who owns a node --------------------------------------------------------------------------


@dataclass(frozen=True)
class Owner:
    """A process, told apart from a later one that reuses its pid by its start time."""

    pid: int
    started: int | None

    @classmethod
    def of(cls, pid: int) -> Owner:
        return cls(pid, _start_time(pid))

    def alive(self) -> bool:
        if not pid_alive(self.pid):
            return False
        return self.started is None or _start_time(self.pid) == self.started


def _start_time(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (``/proc/<pid>/stat`` field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); its /proc status says so.
    with contextlib.suppress(OSError):
        status = Path(f"/proc/{pid}/status").read_text()
        if "\nState:\tZ" in status:
            return False
    return True


# -- one node ---------------------------------------------------------------------------------


@dataclass
class Node:
    """One RabbitMQ node: ``<name>@localhost`` on ``127.0.0.1:<port>``, its files in
    ``<root>/<name>``."""

    name: str
    root: Path = field(default_factory=default_root)
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    owner: Owner | None = field(default_factory=lambda: Owner.of(os.getpid()))
    """Who started it (None: whoever runs ``stop``); :func:`sweep` removes it once gone."""
    cookie: str = field(default_factory=default_cookie, repr=False)
    extra_config: str = ""
    tls: bool = False
    plugins: tuple[str, ...] = ()
    """Plugins to enable (beyond the broker itself), e.g. ``rabbitmq_auth_mechanism_ssl``."""
    management_port: int | None = None
    """Run the management plugin, its HTTP API on ``127.0.0.1:<management_port>``."""

    @property
    def nodename(self) -> str:
        return f"{self.name}@localhost"

    @property
    def base(self) -> Path:
        return self.root / self.name

    @property
    def home(self) -> Path:
        return self.base / "home"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @classmethod
    def load(cls, base: Path) -> Node | None:
        """The node recorded in folder ``base``, or None when it holds no record."""
        try:
            record = json.loads((base / RECORD).read_text())
            owner = record["owner"]
            if record["name"] != base.name:  # a copied folder: its node lives elsewhere
                return None
            return cls(
                name=record["name"],
                root=base.parent,
                port=int(record["port"]),
                dist_port=int(record["dist_port"]),
                owner=Owner(int(owner["pid"]), owner["started"]) if owner else None,
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

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
                "ERL_CRASH_DUMP": str(base / "erl_crash.dump"),  # not the caller's folder
                "ERL_EPMD_ADDRESS": "127.0.0.1",
                "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            }
        )
        return env

    def write_files(self) -> None:
        base = self.base
        for folder in (self.home, base / "mnesia", base / "log"):
            folder.mkdir(parents=True, exist_ok=True)
        self._write_record()
        cookie = self.home / ".erlang.cookie"
        cookie.unlink(missing_ok=True)
        cookie.write_text(self.cookie)
        cookie.chmod(0o400)
        if self.tls:
            listeners = f"listeners.tcp = none\nlisteners.ssl.default = 127.0.0.1:{self.port}\n"
        else:
            listeners = f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
        config = listeners + "loopback_users = none\ncluster_partition_handling = pause_minority\n"
        plugins = self.plugins
        if self.management_port is not None:
            # Statistics every second (5 by default), so rates show up quickly.
            config += (
                f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {self.management_port}\n"
                "collect_statistics_interval = 1000\n"
            )
            plugins = (*plugins, "rabbitmq_management")
        (base / "rabbitmq.conf").write_text(config + self.extra_config)
        (base / "enabled_plugins").write_text(f"[{','.join(plugins)}].\n")
        (base / "rabbitmq-env.conf").write_text("")

    def _write_record(self) -> None:
        owner = self.owner
        record: dict[str, Any] = {
            "name": self.name,
            "port": self.port,
            "dist_port": self.dist_port,
            "owner": {"pid": owner.pid, "started": owner.started} if owner else None,
        }
        (self.base / RECORD).write_text(json.dumps(record) + "\n")

    # -- lifecycle ---------------------------------------------------------------------------

    def launch(self) -> None:
        """Start the Erlang node and the broker app in the background (see :meth:`wait`)."""
        if port_open(self.port):
            raise NodeError(f"something already answers on {self.address}")
        self.write_files()  # the record first: a run killed from here on leaves a sweepable node
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
            if not check:
                return None
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
        pid = self._beam_pid()
        if pid is not None:
            return pid
        out = self.ctl("eval", "list_to_integer(os:getpid()).")
        return int(out.strip())

    def _beam_pid(self) -> int | None:
        """The pid in the node's pid file, if that process is alive and is this node's VM
        (its command line names this node's HOME): never a stranger that reused the pid."""
        try:
            pid = int((self.base / "pid").read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        if b"-home" not in cmdline or not pid_alive(pid):
            return None
        home = cmdline[cmdline.index(b"-home") + 1]
        return pid if home == os.fsencode(self.home) else None

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
        _wait_gone(pid)
        with contextlib.suppress(FileNotFoundError):
            (self.base / "pid").unlink()

    def stop(self) -> None:
        """Stop the whole node: ``rabbitmqctl stop``, then SIGKILL if its VM lingers."""
        if not (self.home / ".erlang.cookie").exists():
            return  # never launched (and rabbitmqctl would crash for want of a cookie)
        pid = self._beam_pid()
        self.ctl("stop", timeout=60, check=False)
        if pid is None:
            return
        try:
            _wait_gone(pid, timeout=30)
        except NodeError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_gone(pid)

    def remove(self) -> None:
        """Stop the node and delete its folder."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

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


def _wait_gone(pid: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            raise NodeError(f"pid {pid} is still alive after {timeout}s")
        time.sleep(0.05)


# -- groups of nodes, for fixtures ------------------------------------------------------------


@contextlib.contextmanager
def cluster(root: Path, size: int = 3, prefix: str = "chimera-c") -> Iterator[list[Node]]:
    """``size`` nodes clustered with ``join_cluster``; all removed at the end, whatever happens."""
    tag = secrets.token_hex(3)
    cookie = default_cookie()
    nodes = [Node(f"{prefix}{n}-{tag}", root, cookie=cookie) for n in range(1, size + 1)]
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
            node.remove()


@contextlib.contextmanager
def single(
    root: Path,
    *,
    prefix: str,
    tls: bool = False,
    extra_config: str = "",
    plugins: tuple[str, ...] = (),
) -> Iterator[Node]:
    """One node on its own (a TLS node); removed at the end."""
    node = Node(
        f"{prefix}-{secrets.token_hex(3)}",
        root,
        tls=tls,
        extra_config=extra_config,
        plugins=plugins,
    )
    try:
        node.launch()
        node.wait()
        yield node
    finally:
        node.remove()


def sweep(root: Path | None = None) -> list[Node]:
    """Stop and remove the nodes under ``root`` whose owner process is gone; the swept nodes.

    Folders without a record, nodes without an owner (started from the command
    line) and nodes whose owner still runs are left alone, and so is anything
    named ``rabbit`` or on the shared port, whatever a record says.
    """
    root = root or default_root()
    swept = []
    for base in sorted(root.iterdir()) if root.is_dir() else []:
        node = Node.load(base)
        if node is None or node.owner is None or node.owner.alive():
            continue
        if node.name == "rabbit" or SHARED_PORT in (node.port, node.dist_port):
            continue
        node.remove()
        swept.append(node)
    return swept


# -- command line -----------------------------------------------------------------------------

USAGE = "usage: rabbit-node start|stop|env NAME [PORT] | sweep"


def main(argv: list[str]) -> int:
    if argv[:1] == ["sweep"] and len(argv) == 1:
        for node in sweep():
            owner = node.owner.pid if node.owner else "?"
            print(f"swept {node.nodename} on {node.address} (owner pid {owner} is gone)")
        return 0
    if len(argv) not in (2, 3) or argv[0] not in ("start", "stop", "env"):
        return _usage()
    command, name = argv[0], argv[1]
    port = _port(argv[2]) if len(argv) == 3 else None
    if command == "stop":
        _stoppable(name, port).stop()
        return 0
    if port is None:
        return _usage()
    if command == "env":
        print(
            f"export RABBITMQ__HOST=127.0.0.1 RABBITMQ__PORT={port} "
            f"RABBITMQ_NODENAME={name}@localhost"
        )
        return 0
    management = os.environ.get("RABBIT_NODE_MANAGEMENT_PORT")
    node = Node(
        name,
        port=port,
        dist_port=port + DIST_OFFSET,
        owner=None,  # runs until `stop`: the sweep leaves it alone
        management_port=int(management) if management else None,
    )
    return _start(node)


def _stoppable(name: str, port: int | None) -> Node:
    """Node ``NAME`` as its record says, else as the command line would have started it
    (without a port, any: the port only steers rabbitmqctl's own distribution ports)."""
    recorded = Node.load(default_root() / name)
    if recorded is not None:
        return recorded
    port = port or free_port()
    return Node(name, port=port, dist_port=port + DIST_OFFSET, owner=None)


def _start(node: Node) -> int:
    if port_open(node.port):
        # Ours already (a second start) is fine; anything else on the port is another
        # engineer's broker or service, and tests pointed at it would disturb them.
        if node.ctl("ping", timeout=30, check=False) is None:
            print(
                f"{node.address} is taken by something other than {node.nodename}; "
                "pick another port",
                file=sys.stderr,
            )
            return 1
    else:
        node.launch()
        node.wait()
    print(f"{node.nodename} answering on {node.address}")
    return 0


def _port(text: str) -> int:
    highest = 65535 - DIST_OFFSET  # its distribution port must fit too
    if not text.isdigit() or not 0 < int(text) <= highest:
        raise SystemExit(f"{text!r} is not a port for a private node: give one from 1 to {highest}")
    return int(text)


def _usage() -> int:
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
