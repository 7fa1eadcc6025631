"""Grafana dashboards generated from the metric catalogue, the recording rules and the mixin
config (``modelmon mixin --dashboards``), built with Grafana's own Python SDK
(``grafana-foundation-sdk``, the optional ``dashboards`` extra).

- ``fleet``: every model at a glance, from the recording rules;
- ``model``: one model in detail (traffic, drift, one feature against its reference, data
  quality, predictions, performance, segments, resources);
- ``sidecar``: the sidecars' own pipeline and process.

The boards link to each other (the ``modelmon`` tag) and to the runbook.
"""

from __future__ import annotations

from ..config import MixinConfig
from ..rules import RecordingRules
from . import fleet, model, sidecar
from .board import GENERATED_NOTE, to_json

__all__ = ["BOARDS", "GENERATED_NOTE", "dashboards"]

# uid by file name
BOARDS = {fleet.FILE: fleet.UID, model.FILE: model.UID, sidecar.FILE: sidecar.UID}
SIDECAR_FILE = sidecar.FILE


def dashboards(config: MixinConfig) -> dict[str, str]:
    """Every generated dashboard's JSON, by file name."""
    config.validate()
    rules = RecordingRules(config)
    return {
        fleet.FILE: to_json(fleet.fleet_overview(config, rules)),
        model.FILE: to_json(model.model_detail(config)),
        sidecar.FILE: to_json(sidecar.sidecar_health(config)),
    }
