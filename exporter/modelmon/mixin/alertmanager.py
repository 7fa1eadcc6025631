"""The Alertmanager configuration: critical pages through PagerDuty (Events API v2), warnings go
to a webhook, info to a low-urgency webhook or nowhere, the Watchdog to a heartbeat receiver."""

from __future__ import annotations

from typing import Any

from .alerts import OUTAGE_SOURCES, SILENCED_BY_OUTAGE, Alert
from .config import MixinConfig

PAGERDUTY = "modelmon-pagerduty"
WARNING = "modelmon-warning"
INFO = "modelmon-info"
HEARTBEAT = "modelmon-heartbeat"
GROUP_BY = ("alertname", "model")

# PagerDuty's severities are critical, error, warning and info.
_PD_SEVERITY = ('{{ if eq .CommonLabels.severity "critical" }}critical'
                '{{ else if eq .CommonLabels.severity "warning" }}warning{{ else }}info{{ end }}')


def _joined(field: str) -> str:
    """A Go template listing ``field`` of every firing alert of the group, comma-separated."""
    return f'{{{{ range $i, $a := .Alerts.Firing }}}}{{{{ if $i }}}}, {{{{ end }}}}{field}{{{{ end }}}}'


def alertmanager_config(config: MixinConfig, alerts: list[Alert]) -> dict[str, Any]:
    am = config.alertmanager
    agg = list(config.aggregation_labels)
    watchdog = "ModelmonWatchdog"
    silenced = sorted({a.name for a in alerts if a.concern in SILENCED_BY_OUTAGE})
    pages = "|".join(am.page_severities)
    low = "|".join(s for s in ("info", config.watchdog_severity) if s not in am.page_severities)
    routes: list[dict[str, Any]] = [
        {"receiver": HEARTBEAT, "matchers": [f'alertname="{watchdog}"'], "group_wait": "0s",
         "group_interval": am.heartbeat_interval, "repeat_interval": am.heartbeat_interval},
        {"receiver": PAGERDUTY, "matchers": [f'severity=~"{pages}"'],
         "repeat_interval": am.page_repeat_interval},
    ]
    if "warning" not in am.page_severities:
        routes.append({"receiver": WARNING, "matchers": ['severity="warning"']})
    if low:
        routes.append({"receiver": INFO, "matchers": [f'severity=~"{low}"']})
    pagerduty: dict[str, Any] = {
        "routing_key_file": am.routing_key_file,
        "url": am.pagerduty_url,
        "send_resolved": True,
        "severity": _PD_SEVERITY,
        "description": "{{ .CommonLabels.alertname }}{{ with .CommonLabels.model }} ({{ . }}){{ end }}: "
                       "{{ .CommonAnnotations.summary }}",
        "client": "modelmon Alertmanager",
        "client_url": "{{ .ExternalURL }}",
        "component": "{{ .CommonLabels.model }}",
        "class": "{{ .CommonLabels.alertname }}",
        "details": {
            "model": "{{ .CommonLabels.model }}",
            "feature": _joined("{{ $a.Labels.feature }}"),
            "value": _joined("{{ with $a.Labels.feature }}{{ . }}: {{ end }}{{ $a.Annotations.value }}"),
            "description": _joined("{{ $a.Annotations.description }}"),
            "runbook_url": "{{ .CommonAnnotations.runbook_url }}",
            "dashboard_url": "{{ .CommonAnnotations.dashboard_url }}",
        },
        "links": [
            {"href": "{{ .CommonAnnotations.runbook_url }}", "text": "Runbook"},
            {"href": "{{ .CommonAnnotations.dashboard_url }}", "text": "Dashboard"},
        ],
    }
    info: dict[str, Any] = {"name": INFO}
    if am.info_webhook_url:
        info["webhook_configs"] = [{"url": am.info_webhook_url, "send_resolved": False}]
    return {
        "global": {"resolve_timeout": "5m"},
        "route": {
            "receiver": WARNING,
            "group_by": list(GROUP_BY),
            "group_wait": am.group_wait,
            "group_interval": am.group_interval,
            "repeat_interval": am.repeat_interval,
            "routes": routes,
        },
        "inhibit_rules": [
            {   # a critical alert silences its warning twin (same alert, same model or target)
                "source_matchers": ['severity="critical"'],
                "target_matchers": ['severity="warning"'],
                "equal": ["alertname", *agg, "model", "instance", "cgroup"],
            },
            {   # an outage of a model's server or sidecar silences what it makes meaningless
                "source_matchers": [f'alertname=~"{"|".join(OUTAGE_SOURCES)}"'],
                "target_matchers": [f'alertname=~"{"|".join(silenced)}"'],
                "equal": [*agg, "model"],
            },
        ],
        "receivers": [
            {"name": PAGERDUTY, "pagerduty_configs": [pagerduty]},
            {"name": WARNING, "webhook_configs": [{"url": am.warning_webhook_url, "send_resolved": True}]},
            info,
            {"name": HEARTBEAT, "webhook_configs": [{"url": am.heartbeat_url, "send_resolved": False}]},
        ],
    }
