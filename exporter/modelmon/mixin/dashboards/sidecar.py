"""The "Sidecar health" board: the sidecar's own pipeline (analysis queue, drops, payload
errors, drift scoring, the push API) and its process."""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as md

from ...metrics import catalogue as cat
from ..config import MixinConfig, seconds
from .board import RATE_INTERVAL, Board

UID = "modelmon-sidecar"
FILE = "modelmon-sidecar.json"
TITLE = "modelmon / Sidecar health"


def sidecar_health(config: MixinConfig) -> md.Dashboard:
    b = Board(config)
    r = RATE_INTERVAL
    model = 'model=~"$model"'
    b.note(f"_{TITLE}: the sidecars themselves._ What the alerts on these series mean and what "
           f"to do: [runbook]({config.runbook_url}).")
    b.row("Targets")
    b.stat("Sidecars up", "Scrape targets of the selected jobs that answered their last scrape "
           "(Prometheus's `up`).", f"sum({b.raw('up')})", "up", "short", thresholds=(1,), reverse=True)
    b.stat("Sidecars down", "Scrape targets that did not answer their last scrape.",
           f"count({b.raw('up')} == 0) or vector(0)", "down", "short", thresholds=(1,))
    b.timeseries("Scrape duration", "How long Prometheus took to scrape each sidecar's /metrics "
                 "(Prometheus's `scrape_duration_seconds`); compare with the scrape timeout.",
                 [(f"max by (instance) ({b.raw('scrape_duration_seconds')})", "{{instance}}")],
                 "s", w=16, h=4)
    b.row("Analysis pipeline")
    depth, capacity = b.sel(cat.QUEUE_DEPTH), b.sel(cat.QUEUE_CAPACITY)
    b.timeseries("Analysis queue fill", f"{cat.QUEUE_DEPTH.help} As a share of its capacity: "
                 "at 100% new records are dropped (reason queue_full).",
                 [(f"max by (instance) ({depth} / {capacity})", "{{instance}}")],
                 "percentunit", max_=1, thresholds=(0.5, 0.8))
    b.timeseries("Dropped records by reason", cat.RECORDS_DROPPED.help,
                 [(f"sum by (reason) (rate({b.sel(cat.RECORDS_DROPPED)}[{r}]))", "{{reason}}")], "cps")
    b.timeseries("Records analysed", cat.RECORDS_ANALYSED.help,
                 [(f"sum by (model, source) (rate({b.sel(cat.RECORDS_ANALYSED, '', model)}[{r}]))",
                   "{{model}} {{source}}")], "cps")
    b.timeseries("Payload errors by reason", cat.PAYLOAD_ERRORS.help,
                 [(f"sum by (model, reason) (rate({b.sel(cat.PAYLOAD_ERRORS, '', model)}[{r}]))",
                   "{{model}} {{reason}}")], "cps")
    b.timeseries("Ingest API requests by handler and code", cat.INGEST_REQUESTS.help,
                 [(f"sum by (handler, code) (rate({b.sel(cat.INGEST_REQUESTS)}[{r}]))",
                   "{{handler}} {{code}}")], "reqps", w=16)
    b.row("Drift scoring")
    b.timeseries("Drift scoring duration", cat.DRIFT_COMPUTE_DURATION.help,
                 [(f"max by (model) ({b.sel(cat.DRIFT_COMPUTE_DURATION, '', model)})", "{{model}}")],
                 "s", w=12)
    b.timeseries("Drift statistics age", "Seconds since the drift statistics were last computed "
                 f"({cat.DRIFT_LAST_SUCCESS.exposed_name}); it should stay near the drift interval. "
                 "Line: ModelmonDriftScoringStalled's threshold.",
                 [(f"time() - max by (model) ({b.sel(cat.DRIFT_LAST_SUCCESS, '', model)})", "{{model}}")],
                 "s", w=12, thresholds=(seconds(config.sidecar.drift_stalled_after),))
    b.row("Process")
    b.timeseries("CPU", "CPU time the sidecar process uses (process_cpu_seconds_total), in cores.",
                 [(f"sum by (instance) (rate({b.raw('process_cpu_seconds_total')}[{r}]))",
                   "{{instance}}")], "percentunit")
    b.timeseries("Resident memory", "Resident memory of the sidecar process "
                 "(process_resident_memory_bytes).",
                 [(f"max by (instance) ({b.raw('process_resident_memory_bytes')})", "{{instance}}")],
                 "bytes")
    b.timeseries("Open file descriptors", "Open file descriptors against the process limit "
                 "(process_open_fds / process_max_fds): the proxy closes idle client connections "
                 "as it nears the limit.",
                 [(f"max by (instance) ({b.raw('process_open_fds')} / {b.raw('process_max_fds')})",
                   "{{instance}}")], "percentunit", decimals=2, thresholds=(0.8, 0.9))
    return b.build(TITLE, UID, "The modelmon sidecars' own health: analysis pipeline, drift "
                   "scoring, process.", b.variables())
