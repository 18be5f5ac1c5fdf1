"""The library's own forgotten coroutines and abandoned tasks fail the test that made them.

Python only warns about a coroutine that was never awaited (a ``RuntimeWarning``
when it is collected) and logs a task destroyed while pending (on the
``asyncio`` logger); both mean work the library meant to do silently did not
happen. Third-party ones are left alone: only coroutines whose code lives in
the ``messaging`` package count. Hooked into every test by ``tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

import messaging

PACKAGE_DIR = str(Path(messaging.__file__).resolve().parent)

_forgotten: dict[str, list[str]] = {}


def ours(code_file: str) -> bool:
    return str(Path(code_file).resolve()).startswith(PACKAGE_DIR)


@contextlib.contextmanager
def _watching(nodeid: str) -> Iterator[None]:
    """Note never-awaited coroutines of ours against ``nodeid``; pass every other
    warning on to pytest as it was."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        yield
    for warning in caught:
        code = getattr(warning.source, "cr_code", None)
        if (
            isinstance(warning.message, RuntimeWarning)
            and code is not None
            and ours(code.co_filename)
        ):
            _forgotten.setdefault(nodeid, []).append(str(warning.message))
        else:
            warnings.warn_explicit(
                warning.message,
                warning.category,
                warning.filename,
                warning.lineno,
                source=warning.source,
            )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with _watching(item.nodeid):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with _watching(item.nodeid):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    with _watching(item.nodeid):
        yield


class AbandonedTasks(logging.Handler):
    """Collects asyncio's "Task was destroyed but it is pending" lines about our code."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "Task was destroyed but it is pending" in text and PACKAGE_DIR in text:
            self.found.append(text)


_abandoned = AbandonedTasks()


def pytest_configure(config: pytest.Config) -> None:
    logging.getLogger("asyncio").addHandler(_abandoned)


def pytest_unconfigure(config: pytest.Config) -> None:
    logging.getLogger("asyncio").removeHandler(_abandoned)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Fail the phase (setup, call or teardown) in which our work was dropped."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    problems = _forgotten.pop(item.nodeid, []) + _abandoned.found
    _abandoned.found = []
    if problems and report.passed:
        report.outcome = "failed"
        report.longrepr = "the library left work undone: " + "; ".join(problems)
