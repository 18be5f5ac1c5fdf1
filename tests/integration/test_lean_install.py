"""A bare ``pip install`` of the wheel has no CLI dependencies, and chimera-bus says what to add.

Real: the wheel is built from this tree and installed, with its dependencies,
into a fresh virtualenv (pip resolves them from the configured index, as a
user's install would).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLI_ONLY = ("typer", "rich", "click", "shellingham", "pygments", "markdown_it")


def run(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def bare_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(python of a venv holding only the wheel and its required dependencies, the wheel)."""
    base = tmp_path_factory.mktemp("lean")
    built = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", base / "dist", ROOT)
    assert built.returncode == 0, built.stderr
    (wheel,) = (base / "dist").glob("chimera_messaging-*.whl")
    made = run(sys.executable, "-m", "venv", "--without-pip", base / "venv")
    assert made.returncode == 0, made.stderr
    python = base / "venv" / "bin" / "python"
    installed = run(sys.executable, "-m", "pip", "--python", python, "install", "-q", wheel)
    assert installed.returncode == 0, installed.stderr
    return python, wheel


def test_the_bare_wheel_brings_no_cli_dependencies(bare_venv: tuple[Path, Path]) -> None:
    python, _ = bare_venv
    probe = run(
        python,
        "-c",
        "import importlib.util as u, messaging;"
        "from messaging import EventPublisher, EventSubscriber, BaseAgent;"
        f"print([m for m in {CLI_ONLY!r} if u.find_spec(m)])",
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[]"  # the library imports, and none of the CLI's modules


def test_chimera_bus_without_the_extra_names_it(bare_venv: tuple[Path, Path]) -> None:
    python, _ = bare_venv
    done = run(python.parent / "chimera-bus", "status")
    assert done.returncode == 2
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        "error: chimera-bus needs the 'cli' extra (module 'typer' is not installed). "
        "Install it with: pip install 'chimera-messaging[cli]'"
    )


def test_the_extra_it_names_makes_it_work(bare_venv: tuple[Path, Path]) -> None:
    python, wheel = bare_venv
    added = run(sys.executable, "-m", "pip", "--python", python, "install", "-q", f"{wheel}[cli]")
    assert added.returncode == 0, added.stderr
    helped = run(python.parent / "chimera-bus", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "status" in helped.stdout
    assert "dlq" in helped.stdout
