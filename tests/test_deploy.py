"""deploy/: the Prometheus alerting rules and the Grafana dashboard stay on mailmux's real metrics.

`promtool` (Debian package `prometheus`, which `.ci/run` installs) checks the rules, runs
their unit tests and parses the dashboard's PromQL; without it those tests are skipped,
except under CI (`CI=true`), where a missing promtool is a failure. The metric names in
every expression are checked against a scrape of a live `Metrics` registry either way.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mailmux.health import EjectionReason, Health
from mailmux.metrics import NATIVE_SHAPE, SMTP_SHAPE, Metrics
from mailmux.routing import Route
from mailmux.spool.base import MessageState
from mailmux.vendors.base import Outcome

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "mailmux.json"

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None and os.environ.get("CI") != "true",
    reason="promtool is not installed (apt-get install -y prometheus; .ci/run installs it)",
)

#: The alerts issue 9 asks for, by name.
ALERTS = {
    "MailmuxVendorEjected",
    "MailmuxAllVendorsEjected",
    "MailmuxSpoolOldestMessageOld",
    "MailmuxSpoolOldestMessageVeryOld",
    "MailmuxDeadlineExpiries",
    "MailmuxConfigReloadFailed",
}

# PromQL words that are not metric names: operators, modifiers, aggregations are
# followed by "(" and dropped by the function rule below, but these may stand alone.
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left"}
KEYWORDS |= {"group_right", "offset", "bool", "inf", "nan"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None, "promtool must be installed under CI"
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False
    )


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and query variables."""
    data = dashboard()
    exprs = [t["expr"] for p in panels(data["panels"]) for t in p.get("targets", [])]
    for var in data["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(var["definition"])
    return exprs


def as_promql(expr: str) -> str:
    """A dashboard expression with Grafana's variables filled in, as Prometheus would get it."""
    expr = expr.replace("$instance", ".*")
    label_values = re.fullmatch(r"label_values\((\w+),\s*\w+\)", expr)
    return label_values.group(1) if label_values else expr


def metric_names(expr: str) -> set[str]:
    """The metric names `expr` selects: identifiers left once strings, label matchers,
    grouping clauses, ranges, numbers and function names are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\boffset\s+\w+", " ", text)
    text = re.sub(r"\b[a-zA-Z_]\w*\s*\(", "(", text)  # function and aggregation names
    text = re.sub(r"\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b", " ", text)
    names = set(re.findall(r"\b[a-zA-Z_:][\w:]*\b", text))
    return names - KEYWORDS


def test_metric_names_extracts_selectors_only() -> None:
    expr = (
        "histogram_quantile(0.9, sum by (vendor, le) (rate(mailmux_attempt_duration_seconds_bucket"
        '{instance=~".*", outcome="a b"}[5m]))) + on (vendor) up offset 5m'
    )
    assert metric_names(expr) == {"mailmux_attempt_duration_seconds_bucket", "up"}


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """The sample names a mailmux registry exposes once every kind of event was recorded."""
    vendors = ("a", "b")
    metrics = Metrics(
        vendors,
        ("sendgrid",),
        health=Health(vendors),
        routes=lambda: [Route("a", 70.0), Route("b", 30.0)],
    )
    for outcome in Outcome:
        metrics.attempt("a", outcome, 0.1)
    for state in MessageState:
        metrics.message(state, "transactional")
    for reason in EjectionReason:
        metrics.ejection("a", reason)
    for shape in (NATIVE_SHAPE, SMTP_SHAPE, "sendgrid"):
        metrics.request(shape, 202)
    metrics.config_reload("ok")
    metrics.config_reload("invalid")
    text = generate_latest(metrics.registry).decode()
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def test_rules_are_the_issue_alerts_with_severity_and_annotations() -> None:
    by_name = {rule["alert"]: rule for rule in rules()}
    assert set(by_name) == ALERTS
    for name, rule in by_name.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"].strip(), name
        assert rule["annotations"]["description"].strip(), name


def test_rules_name_only_exported_metrics(exported: set[str]) -> None:
    for rule in rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= exported, (rule["alert"], names - exported)


def test_dashboard_names_only_exported_metrics(exported: set[str]) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 10
    for expr in queries:
        names = metric_names(as_promql(expr))
        assert names, expr
        assert names <= exported, (expr, names - exported)


def test_dashboard_is_importable_json() -> None:
    data = dashboard()
    assert 36 <= data["schemaVersion"] <= 41
    assert [i["name"] for i in data["__inputs"]] == ["DS_PROMETHEUS"]
    assert data["__inputs"][0]["pluginId"] == "prometheus"
    ids = [p["id"] for p in panels(data["panels"])]
    assert len(ids) == len(set(ids))
    for panel in panels(data["panels"]):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            assert panel["targets"], panel["title"]
    exprs = " ".join(dashboard_queries())
    for needed in (
        'rate(mailmux_attempts_total{outcome="accepted"',
        "histogram_quantile(0.5,",
        "histogram_quantile(0.9,",
        "mailmux_vendor_state",
        "mailmux_vendor_effective_weight",
        "mailmux_spool_depth",
        "mailmux_spool_oldest_age_seconds",
        "mailmux_ingress_requests_total",
    ):
        assert needed in exprs, needed


@needs_promtool
def test_promtool_checks_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


@needs_promtool
def test_promtool_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(RULES_TEST))
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULES_TEST.read_text()))
    assert tested == ALERTS


@needs_promtool
def test_promtool_parses_dashboard_promql(tmp_path: Path) -> None:
    """Each dashboard query as a recording rule: `promtool check rules` parses its PromQL."""
    queries = [as_promql(expr) for expr in dashboard_queries()]
    doc = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"mailmux_dashboard:query{i}", "expr": q}
                    for i, q in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(doc))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
