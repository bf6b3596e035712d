"""deploy/ against the code: the dashboard and the alerts read metrics the bot exposes, the systemd units
stop the bot as it expects. promtool and systemd-analyze check the files themselves (scripts/check-deploy,
run by CI)."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from bot.observability import Metrics
from bot.runtime.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# A word in a query that names a metric (PromQL functions, keywords and label names are not in /metrics).
METRIC_WORD = re.compile(r"\b((?:imagine|process|python)_[a-z_]+)\b")


def exposed_series() -> set[str]:
    """Every series name /metrics can show: the families, and a histogram's _bucket, _sum and _count."""
    names = set()
    for line in Metrics(role="bot").render().decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))
    return names


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DEPLOY / "grafana" / "imagine-bot.json").read_text())
    return loaded


def alert_rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def unit(name: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file as section -> key -> values (a key may repeat)."""
    sections: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    section = ""
    for line in (DEPLOY / "systemd" / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
        else:
            key, value = line.split("=", 1)
            sections[section][key].append(value)
    return sections


def test_the_dashboard_reads_metrics_the_bot_exposes_through_its_datasource_variable() -> None:
    """Valid JSON; the Prometheus data source is a variable (any Prometheus can be picked on import); every
    panel shows a query on a metric /metrics has; the panels an operator looks for are there."""
    board = dashboard()
    [variable] = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert (variable["name"], variable["query"]) == ("datasource", "prometheus")
    exposed = exposed_series()
    panels = board["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    used = set()
    for panel in panels:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            names = set(METRIC_WORD.findall(target["expr"]))
            assert names, target["expr"]
            assert names <= exposed, (panel["title"], names - exposed)
            used |= names
    titles = {panel["title"] for panel in panels}
    for wanted in (
        "Queue depth",
        "Queue wait",
        "Render time",
        "Images / s",
        "Failures",
        "Deliveries",
        "Free disk (IMAGE_DIR)",
        "Process memory",
    ):
        assert wanted in titles
    for metric in (
        "imagine_queue_depth",
        "imagine_job_queued_seconds_bucket",
        "imagine_job_running_seconds_bucket",
        "imagine_images_total",
        "imagine_jobs_total",
        "imagine_deliveries_total",
        "imagine_image_dir_free_bytes",
        "process_resident_memory_bytes",
    ):
        assert metric in used


def test_each_alert_reads_exposed_metrics_and_says_what_to_do() -> None:
    """The four alerts exist, wait before firing, read metrics /metrics has, and carry a summary and a
    description (that each fires on its threshold is promtool's test, deploy/prometheus/alerts_test.yml)."""
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert set(rules) == {
        "ImagineNoWorkerUp",
        "ImagineQueueWaitHigh",
        "ImagineJobErrorRateHigh",
        "ImagineDiskLow",
    }
    assert (rules["ImagineNoWorkerUp"]["for"], rules["ImagineQueueWaitHigh"]["for"]) == ("5m", "10m")
    exposed = exposed_series()
    for name, rule in rules.items():
        names = set(METRIC_WORD.findall(rule["expr"]))
        assert names, name
        assert names <= exposed, (name, names - exposed)
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert len(rule["annotations"]["summary"]) > 10
        assert len(rule["annotations"]["description"]) > 40
    tests = yaml.safe_load((DEPLOY / "prometheus" / "alerts_test.yml").read_text())
    fired = {
        case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"] if case["exp_alerts"]
    }
    assert fired == set(rules)  # every alert has a unit test in which it fires


def test_the_units_stop_the_bot_cleanly_and_run_it_confined() -> None:
    """Both units: a dedicated user, settings from an EnvironmentFile, SIGTERM with more time than
    STOP_TIMEOUT gives the bot, restarted on failure, and hardened; the worker template names the worker
    after its instance. Both start the same installed command (scripts/check-deploy verifies them with
    that path replaced by the checkout's)."""
    stop_timeout = Settings.model_fields["stop_timeout"].default
    check_deploy = (DEPLOY.parent / "scripts" / "check-deploy").read_text()
    for name, command in (("imagine-bot.service", "run"), ("imagine-bot-worker@.service", "worker")):
        service = unit(name)["Service"]
        [exec_start] = service["ExecStart"]
        assert exec_start == f"/opt/imagine-bot/.venv/bin/imagine-bot {command}"
        assert "INSTALLED=/opt/imagine-bot/.venv/bin/imagine-bot" in check_deploy
        assert service["User"] == ["imagine-bot"]
        assert service["EnvironmentFile"] == ["/etc/imagine-bot/imagine-bot.env"]
        assert service["KillSignal"] == ["SIGTERM"]
        assert float(service["TimeoutStopSec"][0]) > stop_timeout
        assert service["Restart"] == ["on-failure"]
        assert service["NoNewPrivileges"] == ["yes"]
        assert service["ProtectSystem"] == ["strict"]
        assert service["PrivateTmp"] == ["yes"]
        assert service["WorkingDirectory"] == service["ReadWritePaths"] == ["/var/lib/imagine-bot"]
        assert "PrivateDevices" not in service  # a process that renders needs the GPU's device files
    assert "WORKER_NAME=%i" in unit("imagine-bot-worker@.service")["Service"]["Environment"]
    assert "worker_name" in Settings.model_fields
