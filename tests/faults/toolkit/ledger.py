"""A ledger of what happened to each message in a fault scenario, and the invariants.

The publisher side sorts each message id into confirmed (C), failed-and-raised
(F) or uncertain (U: in flight when a fault hit, so it may or may not have
reached the broker). The consumer side records deliveries (D) and the DLQ
dead letters (L). After draining, ``check()`` asserts:

* C ⊆ D | L: no confirmed message is lost;
* D | L ⊆ C | U: nothing arrives that was not (possibly) published;
* every published id got an outcome (C, F or U);
* the work queue is empty;
* duplicate deliveries only when a fault was injected.

A confirmed outcome wins: an id marked uncertain at a fault and confirmed
later (a late confirm, or a retry) counts as C. Every ``check()`` appends its
``Result`` to a JSON-lines file (``CHIMERA_FAULT_RESULTS``, default
``bench/results/faults.jsonl``) that ``scripts/fault_report.py`` turns into a table.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "COLUMNS",
    "InvariantError",
    "Ledger",
    "Result",
    "append_result",
    "format_table",
    "latest_per_scenario",
    "load_results",
    "print_table",
    "results_path",
]

REPO_ROOT = Path(__file__).resolve().parents[3]
RESULTS_ENV = "CHIMERA_FAULT_RESULTS"
_SHOW = 20  # offending ids listed per violation


def results_path() -> Path:
    """Where results go: ``$CHIMERA_FAULT_RESULTS``, else ``<repo>/bench/results/faults.jsonl``."""
    configured = os.environ.get(RESULTS_ENV)
    if configured:
        path = Path(configured)
        return path if path.is_absolute() else REPO_ROOT / path
    return REPO_ROOT / "bench" / "results" / "faults.jsonl"


class InvariantError(AssertionError):
    """An invariant failed; ``result`` holds the counts (already recorded)."""

    def __init__(self, message: str, result: Result) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class Result:
    """The outcome of one scenario, one row of the report."""

    scenario: str
    published: int
    confirmed: int
    failed: int
    uncertain: int
    consumed: int  # unique ids delivered
    duplicates: int  # deliveries beyond the first per id
    dead_lettered: int
    missing: int  # confirmed, neither delivered nor dead-lettered
    recover_seconds: float | None
    faults: int = 0
    redelivered: int = 0  # deliveries flagged redelivered by the broker
    work_queue_depth: int = 0
    ok: bool = True
    violations: list[str] = field(default_factory=list)
    at: str = ""  # ISO time the check ran

    def row(self) -> list[str]:
        """The values for ``COLUMNS``, formatted."""
        recover = "-" if self.recover_seconds is None else f"{self.recover_seconds:.2f}s"
        return [
            self.scenario,
            str(self.published),
            str(self.confirmed),
            str(self.failed),
            str(self.uncertain),
            str(self.consumed),
            str(self.duplicates),
            str(self.dead_lettered),
            str(self.missing),
            recover,
            "ok" if self.ok else "FAIL",
        ]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in data.items() if key in known})


COLUMNS = [
    "scenario",
    "published",
    "confirmed",
    "failed",
    "uncertain",
    "consumed",
    "duplicates",
    "dead-lettered",
    "missing",
    "time to recover",
    "result",
]


def _ids(ids: Iterable[str]) -> str:
    ordered = sorted(ids)
    shown = ", ".join(ordered[:_SHOW])
    more = f" ... (+{len(ordered) - _SHOW} more)" if len(ordered) > _SHOW else ""
    return f"[{shown}{more}]"


class Ledger:
    """Thread-safe record of one scenario; see the module docstring.

    Publisher threads, consumer callbacks and the test may call it concurrently.
    """

    def __init__(self, scenario: str) -> None:
        self.scenario = scenario
        self._lock = threading.Lock()
        self._published: dict[str, None] = {}  # insertion-ordered set
        self._confirmed: set[str] = set()
        self._failed: dict[str, str] = {}
        self._uncertain: set[str] = set()
        self._deliveries: Counter[str] = Counter()
        self._redelivered = 0
        self._dead: Counter[str] = Counter()
        self._faults: list[tuple[float, str]] = []
        self._recoveries: list[float] = []

    # -- publisher side ----------------------------------------------------------------------

    def published(self, msg_id: str) -> None:
        """``msg_id`` is about to be published (call before the publish)."""
        with self._lock:
            self._published[msg_id] = None

    def confirmed(self, msg_id: str) -> None:
        """The broker confirmed ``msg_id``; overrides an earlier failed/uncertain mark."""
        with self._lock:
            self._published.setdefault(msg_id, None)
            self._confirmed.add(msg_id)
            self._failed.pop(msg_id, None)
            self._uncertain.discard(msg_id)

    def failed(self, msg_id: str, exc: BaseException | str) -> None:
        """The publish of ``msg_id`` raised: the caller was told it did not go out."""
        with self._lock:
            self._published.setdefault(msg_id, None)
            if msg_id not in self._confirmed:
                self._failed[msg_id] = exc if isinstance(exc, str) else repr(exc)
                self._uncertain.discard(msg_id)

    def uncertain(self, msg_id: str) -> None:
        """``msg_id`` was in flight at a fault: it may or may not have reached the broker."""
        with self._lock:
            self._published.setdefault(msg_id, None)
            if msg_id not in self._confirmed:
                self._uncertain.add(msg_id)
                self._failed.pop(msg_id, None)

    def nacks_uncertain(self) -> int:
        """Turn every id that failed with a broker nack into U; returns how many.

        For quorum queues changing leader: RabbitMQ may nack a message it
        still enqueues, so a nack there says "maybe", not "not stored".
        """
        with self._lock:
            nacked = [m for m, why in self._failed.items() if "PublishNackedError" in why]
            for msg_id in nacked:
                del self._failed[msg_id]
                self._uncertain.add(msg_id)
            return len(nacked)

    def mark_in_flight_uncertain(self) -> int:
        """Turn every published id with no outcome yet into U (call at a fault)."""
        with self._lock:
            pending = [
                msg_id
                for msg_id in self._published
                if msg_id not in self._confirmed
                and msg_id not in self._failed
                and msg_id not in self._uncertain
            ]
            self._uncertain.update(pending)
            return len(pending)

    # -- consumer side -----------------------------------------------------------------------

    def delivered(self, msg_id: str, redelivered: bool = False) -> None:
        """The consumer handled ``msg_id`` (count every delivery, duplicates too)."""
        with self._lock:
            self._deliveries[msg_id] += 1
            if redelivered:
                self._redelivered += 1

    def dead_lettered(self, msg_id: str) -> None:
        """``msg_id`` was found in the dead-letter queue."""
        with self._lock:
            self._dead[msg_id] += 1

    # -- faults ------------------------------------------------------------------------------

    def fault(self, description: str) -> float:
        """Record an injected fault; returns its ``time.monotonic()`` stamp."""
        now = time.monotonic()
        with self._lock:
            self._faults.append((now, description))
        return now

    def recovered_after(self, seconds: float) -> None:
        """Record how long the system took to recover from a fault."""
        with self._lock:
            self._recoveries.append(seconds)

    def recovered(self) -> float:
        """Record recovery now, timed from the last ``fault()``; returns the seconds."""
        with self._lock:
            if not self._faults:
                raise RuntimeError("recovered() without a fault()")
            seconds = time.monotonic() - self._faults[-1][0]
            self._recoveries.append(seconds)
        return seconds

    @property
    def faults(self) -> list[str]:
        with self._lock:
            return [description for _, description in self._faults]

    @property
    def pending(self) -> int:
        """Published ids with no outcome yet."""
        with self._lock:
            return sum(
                1
                for msg_id in self._published
                if msg_id not in self._confirmed
                and msg_id not in self._failed
                and msg_id not in self._uncertain
            )

    @property
    def delivered_ids(self) -> set[str]:
        with self._lock:
            return set(self._deliveries)

    # -- the check ---------------------------------------------------------------------------

    def result(self, work_queue_depth: int = 0) -> Result:
        """The counts and the list of violated invariants, without raising or recording."""
        with self._lock:
            published = set(self._published)
            confirmed = set(self._confirmed)
            failed = set(self._failed)
            uncertain = set(self._uncertain)
            deliveries = Counter(self._deliveries)
            dead = Counter(self._dead)
            faults = [description for _, description in self._faults]
            recoveries = list(self._recoveries)
            redelivered = self._redelivered

        delivered = set(deliveries)
        arrived = delivered | set(dead)
        missing = confirmed - arrived
        from_nowhere = arrived - (confirmed | uncertain)
        no_outcome = published - confirmed - failed - uncertain
        duplicated = {msg_id for msg_id, n in deliveries.items() if n > 1}
        duplicated |= {msg_id for msg_id, n in dead.items() if n > 1}
        duplicates = sum(n - 1 for n in deliveries.values()) + sum(n - 1 for n in dead.values())

        violations: list[str] = []
        if missing:
            violations.append(
                f"{len(missing)} confirmed message(s) lost (C - (D | L)): {_ids(missing)}"
            )
        if from_nowhere:
            raised = from_nowhere & failed
            detail = f"; of these, raised at publish: {_ids(raised)}" if raised else ""
            violations.append(
                f"{len(from_nowhere)} message(s) arrived that were never confirmed or in"
                f" flight ((D | L) - (C | U)): {_ids(from_nowhere)}{detail}"
            )
        if no_outcome:
            violations.append(
                f"{len(no_outcome)} published message(s) have no outcome (call"
                f" mark_in_flight_uncertain() at the fault or await the publish):"
                f" {_ids(no_outcome)}"
            )
        if work_queue_depth:
            violations.append(f"work queue not drained: {work_queue_depth} message(s) left")
        if duplicated and not faults:
            violations.append(
                f"{duplicates} duplicate(s) with no fault to explain them: {_ids(duplicated)}"
            )

        return Result(
            scenario=self.scenario,
            published=len(published),
            confirmed=len(confirmed),
            failed=len(failed),
            uncertain=len(uncertain),
            consumed=len(delivered),
            duplicates=duplicates,
            dead_lettered=len(dead),
            missing=len(missing),
            recover_seconds=max(recoveries) if recoveries else None,
            faults=len(faults),
            redelivered=redelivered,
            work_queue_depth=work_queue_depth,
            ok=not violations,
            violations=violations,
            at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )

    def check(self, work_queue_depth: int, *, record: bool = True) -> Result:
        """Assert the invariants; record the result (even a failing one) and print its counts.

        Raises ``InvariantError`` (an ``AssertionError``) listing the offending ids.
        """
        result = self.result(work_queue_depth)
        if record:
            append_result(result)
        print(format_table([result]), file=sys.stderr)
        if not result.ok:
            message = f"scenario {self.scenario!r} broke its invariants:\n  " + "\n  ".join(
                result.violations
            )
            raise InvariantError(message, result)
        return result


# -- persistence and the table -------------------------------------------------------------


def append_result(result: Result, path: Path | None = None) -> Path:
    """Append ``result`` as one JSON line; creates the directory. Returns the file."""
    target = path or results_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    line = result.to_json() + "\n"
    with target.open("a", encoding="utf-8") as out:
        out.write(line)
    return target


def load_results(path: Path | None = None) -> list[Result]:
    """Every result in the JSON-lines file, oldest first (bad lines skipped)."""
    source = path or results_path()
    if not source.exists():
        return []
    results: list[Result] = []
    for line in source.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict):
            results.append(Result.from_dict(data))
    return results


def latest_per_scenario(results: Sequence[Result]) -> list[Result]:
    """The last result of each scenario, in the order scenarios first appeared."""
    latest: dict[str, Result] = {}
    for result in results:
        latest[result.scenario] = result
    return list(latest.values())


def format_table(results: Sequence[Result], *, markdown: bool = False) -> str:
    """A plain aligned table, or a Markdown one."""
    rows = [COLUMNS, *(result.row() for result in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        if markdown:
            return "| " + " | ".join(padded) + " |"
        return "  ".join(padded).rstrip()

    out = [line(COLUMNS)]
    if markdown:
        out.append(
            "| "
            + " | ".join(
                ("-" * width if i == 0 else "-" * (width - 1) + ":")
                for i, width in enumerate(widths)
            )
            + " |"
        )
    else:
        out.append("  ".join("-" * width for width in widths))
    out.extend(line(result.row()) for result in results)
    return "\n".join(out)


def print_table(
    results: Sequence[Result], *, markdown: bool = False, file: TextIO | None = None
) -> None:
    print(format_table(results, markdown=markdown), file=file or sys.stdout)
