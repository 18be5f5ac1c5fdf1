"""The shipped alert rules and the dashboard's failure panel stay quiet on healthy traffic.

``promtool test rules`` (Debian's ``prometheus`` package; .ci/run installs it)
evaluates the real rules file and the panel's real query over series made
here: replies, confirmed publishes and requests answered before their confirm
must fire nothing; every failing outcome must fire ChimeraPublishesFailing.
The outcome table of docs/MONITORING.md and the alert's selector are checked
against the code's own list of outcomes, so none of them can drift.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from messaging.ops.metrics import FAILED_OUTCOMES, OUTCOMES, REPLY_ROUTING_KEY

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "docs" / "prometheus" / "chimera-alerts.yml"
MONITORING = (ROOT / "docs" / "MONITORING.md").read_text()
DASHBOARD = json.loads((ROOT / "docs" / "grafana" / "chimera-bus.json").read_text())
FAILURE_PANEL = 9
FAILURES = f'outcome=~"{"|".join(FAILED_OUTCOMES)}"'
PER_MINUTE = 10  # of each healthy kind; rates are per second, so any steady flow will do


def shown_rules() -> str:
    """The YAML block under "Example Prometheus alerts" in docs/MONITORING.md."""
    section = MONITORING[MONITORING.index("## Example Prometheus alerts") :]
    start = section.index("```yaml\n") + len("```yaml\n")
    return section[start : section.index("```\n", start)]


def outcome_table() -> dict[str, str]:
    """Outcome -> its "failure?" cell, from the table in docs/MONITORING.md."""
    rows = re.findall(r"^\| `([a-z_]+)` \| (yes|no) \|", MONITORING, flags=re.M)
    return dict(rows)


def failure_panel_expr() -> str:
    panel = next(p for p in DASHBOARD["panels"] if p["id"] == FAILURE_PANEL)
    (target,) = panel["targets"]
    return str(target["expr"]).replace('"$agent"', '".*"')


def test_the_docs_show_the_shipped_rules_file() -> None:
    assert shown_rules() == RULES.read_text()


def test_the_outcome_table_lists_every_outcome_the_code_counts() -> None:
    table = outcome_table()
    assert list(table) == list(OUTCOMES)
    assert [o for o, failure in table.items() if failure == "yes"] == list(FAILED_OUTCOMES)


def test_the_alert_and_the_panel_select_the_failures_only() -> None:
    rules = RULES.read_text()
    failing = rules[rules.index("alert: ChimeraPublishesFailing") :]
    assert FAILURES in failing[: failing.index("for:")]
    assert FAILURES in failure_panel_expr()


# -- promtool ------------------------------------------------------------------------


def series(outcome: str, per_minute: int, routing_key: str = "work.done") -> dict[str, str]:
    labels = f'agent="a", exchange="chimera.events", routing_key="{routing_key}"'
    return {
        "series": f'chimera_messages_published_total{{{labels}, outcome="{outcome}"}}',
        "values": f"0+{per_minute}x40",  # a counter growing every minute for 40 minutes
    }


HEALTHY = [
    series("confirmed", PER_MINUTE),
    series("replied", PER_MINUTE, REPLY_ROUTING_KEY),
    series("cancelled", PER_MINUTE),  # requests answered before their confirm
]


def quiet(name: str) -> list[dict[str, Any]]:
    return [{"eval_time": f"{m}m", "alertname": name, "exp_alerts": []} for m in (10, 20, 30)]


def filled_annotations(alert: str, labels: dict[str, str]) -> dict[str, str]:
    """The rule's annotations as Prometheus fills in ``{{ $labels.x }}`` for ``labels``."""
    rules = RULES.read_text()
    block = rules[rules.index(f"- alert: {alert}\n") :]
    block = block[block.index("annotations:\n") :].split("- alert:")[0]
    # Every annotation of the file is one double-quoted line, which JSON reads as YAML does.
    found = re.findall(r'^ +(\w+): (".*")$', block, flags=re.M)
    assert found, f"no annotations found for {alert}"
    filled = {}
    for name, quoted in found:
        template = json.loads(quoted)
        text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], template)
        assert "{{" not in text, f"{alert}.{name}: a template this test cannot fill: {text}"
        filled[name] = text
    return filled


def rule_tests(failing: str) -> dict[str, Any]:
    """promtool's test file: the healthy flow alone, then with ``failing`` added."""
    alert = {"agent": "a", "exchange": "chimera.events", "outcome": failing}
    return {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": HEALTHY,
                "alert_rule_test": quiet("ChimeraPublishesFailing") + quiet("FailurePanel"),
            },
            {
                "interval": "1m",
                "input_series": [*HEALTHY, series(failing, 1)],
                "alert_rule_test": [
                    {"eval_time": "4m", "alertname": "ChimeraPublishesFailing", "exp_alerts": []},
                    {
                        "eval_time": "15m",
                        "alertname": "ChimeraPublishesFailing",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "warning", **alert},
                                "exp_annotations": filled_annotations(
                                    "ChimeraPublishesFailing", alert
                                ),
                            }
                        ],
                    },
                    {
                        "eval_time": "15m",
                        "alertname": "FailurePanel",
                        "exp_alerts": [{"exp_labels": alert}],
                    },
                ],
            },
        ],
    }


def panel_rule() -> str:
    """The dashboard's "Publishes failed" query as an alert: shows anything means fires."""
    return json.dumps(
        {
            "groups": [
                {
                    "name": "panel",
                    "rules": [{"alert": "FailurePanel", "expr": failure_panel_expr() + " > 0"}],
                }
            ]
        }
    )


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool is not installed (Debian: apt-get install prometheus)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; .ci/run installs it, so CI must have it")
        pytest.skip(message)
    return found


@pytest.mark.parametrize("failing", FAILED_OUTCOMES)
def test_promtool_healthy_traffic_fires_nothing_and_failures_fire(
    failing: str, tmp_path: Path
) -> None:
    tool = promtool()
    # promtool reads one rules file per group list: the shipped one, and the panel's.
    (tmp_path / "rules.yml").write_text(RULES.read_text())
    (tmp_path / "panel.yml").write_text(panel_rule())
    tests = rule_tests(failing)
    tests["rule_files"].append("panel.yml")
    (tmp_path / "tests.yml").write_text(json.dumps(tests))  # JSON is YAML
    result = subprocess.run(
        [tool, "test", "rules", "tests.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_reads_the_rules_file() -> None:
    tool = promtool()
    result = subprocess.run(
        [tool, "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
