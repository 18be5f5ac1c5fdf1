"""Node.js amqplib, the cross-language anchor: the same rows, run by ``node/amqplib_bench.js``.

amqplib is the most used AMQP client of any language; its row in every table
says how far the Python clients and the bus are from it (the ``vs amqplib``
column). It is not a raw *Python* client, so it never counts as "best raw".

``bench/node`` owns the install: ``package.json`` and ``package-lock.json`` are
committed, ``node_modules`` is not. Importing this module runs ``npm ci`` there
when amqplib is missing; without ``node``/``npm`` the module is reported as
not measured.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
from pathlib import Path

from common import BODY_SIZE, PUBLISH_IN_FLIGHT, BenchContext, Sample, latency_sample, rate_sample
from registry import register

NODE_DIR = Path(__file__).resolve().parent / "node"
SCRIPT = NODE_DIR / "amqplib_bench.js"
NAME = "amqplib"


def ensure_installed() -> str:
    """Path of ``node``, after installing amqplib from the lock file if it is missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise ImportError("node and npm are needed for the amqplib row")
    if (NODE_DIR / "node_modules" / "amqplib" / "package.json").exists():
        return node
    # Workers run one at a time, but two bench runs may start together.
    with open(NODE_DIR / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (NODE_DIR / "node_modules" / "amqplib" / "package.json").exists():
            proc = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=NODE_DIR,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            if proc.returncode != 0:
                raise ImportError(f"npm ci in {NODE_DIR} failed: {proc.stderr.strip()[-300:]}")
    return node


NODE = ensure_installed()


def _run(ctx: BenchContext) -> dict[str, object]:
    args = {
        "work": ctx.work,
        "url": ctx.url,
        "exchange": ctx.exchange,
        "queue": ctx.queue,
        "routing_key": ctx.routing_key,
        "messages": ctx.messages,
        "prefetch": ctx.prefetch,
        "in_flight": PUBLISH_IN_FLIGHT,
        "body_size": BODY_SIZE,
        "deadline_s": ctx.deadline_s,
    }
    proc = subprocess.run(
        [NODE, str(SCRIPT), json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=ctx.deadline_s + 30,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"amqplib_bench.js failed: {proc.stderr.strip()[-500:]}")
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@register(NAME, "publish", "consume100", "consume1", raw=False, anchor=True)
def rate(ctx: BenchContext) -> Sample:
    out = _run(ctx)
    count, seconds = int(str(out["count"])), float(str(out["seconds"]))
    return rate_sample(ctx, count, seconds, node=True, cpu_us_per_msg=_cpu_per_msg(out))


@register(NAME, "rpc", raw=False, anchor=True)
def rpc(ctx: BenchContext) -> Sample:
    out = _run(ctx)
    latencies = out["latencies_s"]
    assert isinstance(latencies, list)
    sample = latency_sample(ctx, [float(x) for x in latencies], float(str(out["seconds"])))
    sample.notes["cpu_us_per_msg"] = _cpu_per_msg(out)
    return sample


def _cpu_per_msg(out: dict[str, object]) -> float:
    """Node's own CPU while timed (process.cpuUsage), per message."""
    count = max(1, int(str(out["count"])))
    return round(float(str(out["cpu_s"])) / count * 1e6, 1)
