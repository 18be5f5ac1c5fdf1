"""Importing the bus, and opening its connections, changes no other library's state.

Real: a fresh interpreter imports every module of aiormq, aio-pika and pamqp,
takes a snapshot of their module namespaces, of the classes they define and
of pamqp's codec tables, then imports ``messaging`` (and ``messaging.aio``),
opens a pool's connections to the broker, and a plain ``aiormq.connect`` in
the same process. Every name must still be bound to the very object it was,
and the plain aiormq connection must read frames with aiormq's own
``FrameReceiver`` while the bus's read with its ``FrameReader``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.broker_env import HOST, PORT, URL

SCRIPT = textwrap.dedent(
    """
    import asyncio, importlib, json, pkgutil, sys

    PACKAGES = ("aiormq", "aio_pika", "pamqp")
    for package in PACKAGES:
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, package + "."):
            if info.name.split(".")[-1].startswith("hook-"):
                continue  # aio-pika's PyInstaller hook: needs PyInstaller
            importlib.import_module(info.name)

    def snapshot():
        state = {}
        for name, module in list(sys.modules.items()):
            if name.split(".")[0] not in PACKAGES:
                continue
            state[name] = dict(vars(module))
            for key, value in vars(module).items():
                if isinstance(value, type) and value.__module__ == name:
                    state[f"{name}.{key}"] = dict(vars(value))
        from pamqp import decode, encode
        for label, table in (
            ("pamqp.decode.METHODS", decode.METHODS),
            ("pamqp.decode.TABLE_MAPPING", decode.TABLE_MAPPING),
            ("pamqp.encode.METHODS", encode.METHODS),
        ):
            state["table " + label] = dict(table)
        return state

    def changes(before, after):
        found = []
        for where, names in before.items():
            now = after.get(where)
            if now is None:
                found.append(f"{where}: gone")
                continue
            for key in names.keys() | now.keys():
                if key not in names or key not in now or names[key] is not now[key]:
                    found.append(f"{where}.{key}")
        return sorted(found)

    def reader_of(connection):
        # aiormq's reader task runs Connection.__reader(frame_receiver).
        return type(connection._reader_task.get_coro().cr_frame.f_locals["frame_receiver"])

    before = snapshot()

    import messaging, messaging.aio
    from messaging.config import RabbitMQConfig

    async def main():
        import aiormq
        config = RabbitMQConfig(host=sys.argv[1], port=int(sys.argv[2]))
        pool = messaging.aio.AsyncConnectionPool(config)
        await pool.connect()
        bus = pool.publishing.connection._connection.transport.connection
        plain = await aiormq.connect(sys.argv[3])
        try:
            return {
                "bus_reader": reader_of(bus).__qualname__,
                "bus_reader_module": reader_of(bus).__module__,
                "plain_reader": reader_of(plain).__qualname__,
                "plain_reader_module": reader_of(plain).__module__,
                "plain_is_aiormqs": reader_of(plain) is aiormq.connection.FrameReceiver,
            }
        finally:
            await plain.close()
            await pool.close()

    report = asyncio.run(main())
    report["changed"] = changes(before, snapshot())
    print(json.dumps(report))
    """
)


def test_importing_and_connecting_changes_nothing_of_aiormq_aio_pika_or_pamqp() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, HOST, str(PORT), URL],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["changed"] == []
    # A plain aiormq connection in the same process reads with aiormq's own reader...
    assert report["plain_is_aiormqs"]
    assert report["plain_reader"] == "FrameReceiver"
    assert report["plain_reader_module"] == "aiormq.connection"
    # ... and the bus's with its fast one (the speed is not silently lost).
    assert report["bus_reader"] == "FrameReader"
    assert report["bus_reader_module"] == "messaging.transport.amqp.frame_reader"
