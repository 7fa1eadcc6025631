"""The Alertmanager configuration: critical pages through PagerDuty (Events API v2), warnings go
to a webhook, info to a low-urgency webhook or nowhere, the Watchdog to a heartbeat receiver.

PagerDuty keys an incident by the event's dedup key, which Alertmanager derives from the
aggregation group: the SHA-256 of the route's matchers from the root and the group's labels
(``{}/{alertname=~"Modelmon.+"}/{severity=~"critical"}:{alertname="...", model="..."}``). A
change of the routing (the matchers, ``page_severities``, ``group_by``) gives every group a new
key, so the resolve of an incident opened before goes to a key PagerDuty does not know, and that
incident stays open."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .alerts import OUTAGE_SOURCES, SILENCED_BY_OUTAGE, Alert
from .config import MixinConfig

PAGERDUTY = "modelmon-pagerduty"
WARNING = "modelmon-warning"
INFO = "modelmon-info"
HEARTBEAT = "modelmon-heartbeat"
GROUP_BY = ("alertname", "model")
# The subtree that takes modelmon's alerts, and only them: copied under the root of a shared
# Alertmanager, it must not page other exporters' critical alerts.
MODELMON_ALERTS = 'alertname=~"Modelmon.+"'

# PagerDuty's severities are critical, error, warning and info.
_PD_SEVERITY = ('{{ if eq .CommonLabels.severity "critical" }}critical'
                '{{ else if eq .CommonLabels.severity "warning" }}warning{{ else }}info{{ end }}')
# Lists in the templates below: $sep is written before every item but the first.
_SEP = '{{ $sep := "" }}'


def _joined(value: str, prefix: str = "") -> str:
    """A Go template listing ``value`` (a field of ``$a``) of every firing alert ``$a`` of the
    group that has one, comma-separated, each after ``prefix`` (a template over ``$a``)."""
    return (_SEP + '{{ range $a := .Alerts.Firing }}'
            f'{{{{ with {value} }}}}{{{{ $sep }}}}{prefix}{{{{ . }}}}{{{{ $sep = ", " }}}}{{{{ end }}}}'
            '{{ end }}')


def _segment(value: str, otherwise: str = "") -> str:
    """A Go template: ``value``, after a "/" unless it is the first segment written, if it is not
    empty; else ``otherwise``."""
    return (f'{{{{ with {value} }}}}{{{{ $sep }}}}{{{{ . }}}}{{{{ $sep = "/" }}}}'
            + (f"{{{{ else }}}}{otherwise}" if otherwise else "") + "{{ end }}")


def _shared(labels: Sequence[str]) -> str:
    """A Go template: the values of ``labels`` the group's alerts share, "/"-separated (a label
    they do not share is left out)."""
    return "".join(_segment(f'index .CommonLabels "{label}"') for label in labels)


def pagerduty_source(config: MixinConfig) -> str:
    """PagerDuty's ``payload.source``, the affected system: ``alertmanager.pagerduty_source``, or
    the aggregation labels and the model the group's alerts share (the instance for alerts of no
    model), e.g. ``modelmon/churn``; ``modelmon`` when they share none of them (PagerDuty
    refuses an event without a source)."""
    if config.alertmanager.pagerduty_source:
        return config.alertmanager.pagerduty_source
    return (_SEP + _shared(config.aggregation_labels)
            + _segment(".CommonLabels.model", _segment(".CommonLabels.instance"))
            + "{{ if not $sep }}modelmon{{ end }}")


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
        "source": pagerduty_source(config),
        "client": "modelmon Alertmanager",
        "client_url": "{{ .ExternalURL }}",
        "component": "{{ .CommonLabels.model }}",
        "group": _SEP + _shared(config.aggregation_labels),
        "class": "{{ .CommonLabels.alertname }}",
        "details": {
            "model": "{{ .CommonLabels.model }}",
            "feature": _joined("$a.Labels.feature"),
            "value": _joined("$a.Annotations.value", "{{ with $a.Labels.feature }}{{ . }}: {{ end }}"),
            "description": _joined("$a.Annotations.description"),
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
            # the root, for a standalone Alertmanager: alerts of other exporters reach the
            # warning webhook, never PagerDuty
            "receiver": WARNING,
            "group_by": list(GROUP_BY),
            "group_wait": am.group_wait,
            "group_interval": am.group_interval,
            "repeat_interval": am.repeat_interval,
            # modelmon's subtree: copy this route into a shared Alertmanager's tree
            "routes": [{"receiver": WARNING, "matchers": [MODELMON_ALERTS], "group_by": list(GROUP_BY),
                        "routes": routes}],
        },
        "inhibit_rules": [
            {   # a critical alert silences its warning twin (same alert, same model or target)
                "source_matchers": [MODELMON_ALERTS, 'severity="critical"'],
                "target_matchers": [MODELMON_ALERTS, 'severity="warning"'],
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
