"""Static previews of the generated Grafana dashboards, drawn with matplotlib from a live
Prometheus with the boards' own queries (Grafana itself cannot be installed here).

Each panel is drawn where its gridPos puts it: time series as lines (thresholds dashed), stats as
big numbers, tables as tables (instant queries merged on their labels, as Grafana's ``merge``
transformation does), bar gauges as bars (``format: heatmap`` buckets de-accumulated, as
Grafana does), heatmaps as bucket rates over time.

    python tests/dashboard_previews.py [--seconds 600] [--drift-after 360] [--skip 240] [--out DIR]

runs the live stack of tests/dashboard_stack.py (demo traffic that drifts after a minute, NaNs,
labels, a pushed regression model) for --seconds, then writes one PNG per view (VIEWS).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes

ROOT = Path(__file__).resolve().parents[1]
GRID_W, GRID_H = 0.62, 0.34  # inches per Grafana grid column and row (30 px)
LEGEND_RE = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def fill(expr: str, variables: dict[str, str], rate_interval: str = "1m", range_: str = "5m") -> str:
    """The query as Grafana sends it: variables substituted ($__rate_interval by a window that
    holds several 1 s scrapes, $__range by the preview's time range)."""
    out = expr.replace("$__rate_interval", rate_interval).replace("$__range", range_)
    for name, value in variables.items():
        out = out.replace(f"${{{name}}}", value).replace(f"${name}", value)
    assert "$" not in out, out
    return out


@dataclass
class Drawn:
    """What a panel drew: its title and how many values (points, cells, bars) it showed."""

    title: str
    kind: str
    values: int = 0
    errors: list[str] = field(default_factory=list)


class Prometheus:
    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session, self.url = session, url

    async def _get(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        async with self.session.get(self.url + path, params=params) as resp:
            body = await resp.json()
        if body["status"] != "success":
            raise RuntimeError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]["result"]  # type: ignore[no-any-return]

    async def instant(self, promql: str, at: float) -> list[dict[str, Any]]:
        return await self._get("/api/v1/query", {"query": promql, "time": f"{at:.3f}"})

    async def range(self, promql: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        return await self._get("/api/v1/query_range", {"query": promql, "start": f"{start:.3f}",
                                                       "end": f"{end:.3f}", "step": f"{step:g}"})


def legend(fmt: str, labels: dict[str, str]) -> str:
    if not fmt or fmt == "__auto":
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__") or "value"
    return LEGEND_RE.sub(lambda m: labels.get(m.group(1), ""), fmt).strip()


def fmt_value(value: float, unit: str | None, decimals: int | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    d = 2 if decimals is None else decimals
    if unit == "percentunit":
        return f"{value * 100:.{max(d - 1, 0) if abs(value) >= 0.1 else d}f}%"
    if unit == "bytes":
        for size, name in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
            if abs(value) >= size:
                return f"{value / size:.1f} {name}"
        return f"{value:.0f} B"
    if unit == "s":
        if abs(value) >= 86400:
            return f"{value / 86400:.1f} d"
        if abs(value) >= 3600:
            return f"{value / 3600:.1f} h"
        if abs(value) >= 60:
            return f"{value / 60:.1f} min"
        if 0 < abs(value) < 1:
            return f"{value * 1000:.{d}f} ms"
        return f"{value:.{d}f} s"
    if unit == "sci":
        return f"{value:.{d}e}"
    suffix = {"reqps": " req/s", "cps": "/s"}.get(unit or "", "")
    if abs(value) >= 1000:
        return f"{value:.0f}{suffix}"
    return f"{value:.{d}g}{suffix}" if d and abs(value) < 1 else f"{value:.{d}f}{suffix}"


def _le(value: str) -> float:
    return math.inf if value == "+Inf" else float(value)


def deaccumulate(series: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """Cumulative ``le`` buckets -> the share/count in each bucket (what Grafana's heatmap
    format does), labelled by the bucket's upper bound."""
    by_le = sorted((_le(s["metric"].get("le", "+Inf")), float(s["value"][1])) for s in series)
    out, previous = [], 0.0
    for bound, value in by_le:
        out.append(("+Inf" if math.isinf(bound) else f"{bound:.4g}", value - previous))
        previous = value
    return out


class Renderer:
    def __init__(self, prom: Prometheus, variables: dict[str, str], start: float, end: float) -> None:
        self.prom, self.variables, self.start, self.end = prom, variables, start, end
        self.step = max(1.0, (end - start) / 240)
        self.range_ = f"{int(end - start)}s"

    def q(self, expr: str) -> str:
        return fill(expr, self.variables, "1m", self.range_)

    async def board(self, board: dict[str, Any], out: Path, rows: tuple[str, ...] = ()) -> list[Drawn]:
        panels = only_rows(board["panels"], rows) if rows else board["panels"]
        height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
        fig = plt.figure(figsize=(24 * GRID_W, height * GRID_H + 0.8), dpi=90)
        fig.patch.set_facecolor("white")
        title = f"{board['title']}   (variables: " + ", ".join(
            f"{k}={v}" for k, v in self.variables.items() if k != "datasource") + ")"
        fig.suptitle(title, x=0.01, y=1 - 0.25 / (height * GRID_H + 0.8), ha="left",
                     fontsize=14, fontweight="bold")
        drawn = []
        for panel in panels:
            g = panel["gridPos"]
            total = height * GRID_H + 0.8
            top = 1 - (0.6 + g["y"] * GRID_H) / total  # the panel's top edge, a share of the figure
            h = g["h"] * GRID_H / total
            # room for the title above and the tick labels below the axes
            # room for the title above, the tick labels below and left (axes that have them)
            pad = 0.0 if panel["type"] in ("stat", "table") else 0.75 / (24 * GRID_W)
            if panel["type"] == "bargauge":
                pad = 0.9 / (24 * GRID_W)
            rect = (g["x"] / 24 + 0.006 + pad, top - h + 0.35 / total, g["w"] / 24 - 0.014 - pad,
                    h - 0.68 / total)
            kind = panel["type"]
            if kind == "row":
                fig.text(0.005, top - h / 2 - 0.1 / total, self.substitute(panel["title"]), fontsize=12, fontweight="bold",
                         color="#1f60c4", va="center")
                continue
            if kind == "text":
                continue
            ax = fig.add_axes(rect)
            ax.set_title(self.substitute(panel["title"]), loc="left", fontsize=10, fontweight="bold",
                         x=-pad * 24 * GRID_W / (g["w"] * GRID_W) if pad else 0)
            d = Drawn(panel["title"], kind)
            try:
                await getattr(self, kind.replace("-", "_"))(ax, panel, d)
            except (RuntimeError, aiohttp.ClientError) as exc:
                d.errors.append(str(exc))
            if not d.values:
                ax.text(0.5, 0.5, "No data", ha="center", va="center", color="#888", fontsize=11,
                        transform=ax.transAxes)
            drawn.append(d)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=90)
        plt.close(fig)
        return drawn

    def substitute(self, title: str) -> str:
        for name, value in self.variables.items():
            title = title.replace(f"${name}", value)
        return title

    @staticmethod
    def _unit(panel: dict[str, Any]) -> str | None:
        return panel.get("fieldConfig", {}).get("defaults", {}).get("unit")  # type: ignore[no-any-return]

    async def timeseries(self, ax: Axes, panel: dict[str, Any], d: Drawn) -> None:
        unit = self._unit(panel)
        for target in panel["targets"]:
            for s in await self.prom.range(self.q(target["expr"]), self.start, self.end, self.step):
                t = [v[0] for v in s["values"]]
                y = [float(v[1]) for v in s["values"]]
                ax.plot([datetime.fromtimestamp(x) for x in t], y, linewidth=1.4,
                        label=legend(target.get("legendFormat", ""), s["metric"])[:40])
                d.values += len(y)
        defaults = panel["fieldConfig"]["defaults"]
        if d.values and defaults.get("min") is not None:
            ax.set_ylim(bottom=defaults["min"])
        if d.values and defaults.get("max") is not None:
            ax.set_ylim(top=defaults["max"])
        for step in (defaults.get("thresholds") or {}).get("steps", [])[1:]:
            ax.axhline(step["value"], color=step["color"], linestyle="--", linewidth=1)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M" if self.end - self.start > 1800
                                                          else "%H:%M:%S"))
        ax.xaxis.set_major_locator(plt.MaxNLocator(5))
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: fmt_value(v, unit, 2)))
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if d.values:
            handles, labels = ax.get_legend_handles_labels()
            ax.legend(handles[:8], labels[:8], fontsize=7, loc="upper left", framealpha=0.6,
                      ncol=2 if len(labels) > 4 else 1)

    async def stat(self, ax: Axes, panel: dict[str, Any], d: Drawn) -> None:
        ax.axis("off")
        result = await self.prom.instant(self.q(panel["targets"][0]["expr"]), self.end)
        if not result:
            return
        value = float(result[0]["value"][1])
        steps = panel["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])
        colour = steps[0]["color"] if steps else "green"
        for step in steps[1:]:
            if value >= step["value"]:
                colour = step["color"]
        ax.text(0.5, 0.4, fmt_value(value, self._unit(panel), panel["fieldConfig"]["defaults"].get("decimals")),
                ha="center", va="center", fontsize=20, fontweight="bold", color=_colour(colour),
                transform=ax.transAxes)
        d.values = 1

    async def table(self, ax: Axes, panel: dict[str, Any], d: Drawn) -> None:
        ax.axis("off")
        organize = next(t["options"] for t in panel["transformations"] if t["id"] == "organize")
        keep = sorted(organize["indexByName"], key=organize["indexByName"].get)
        renames = organize["renameByName"]
        units, mappings, places = {}, {}, {}
        for o in panel["fieldConfig"].get("overrides", []):
            for prop in o["properties"]:
                if prop["id"] == "unit":
                    units[o["matcher"]["options"]] = prop["value"]
                if prop["id"] == "decimals":
                    places[o["matcher"]["options"]] = prop["value"]
                if prop["id"] == "mappings":
                    mappings[o["matcher"]["options"]] = prop["value"][0]["options"]
        rows: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
        several = len(panel["targets"]) > 1
        for i, target in enumerate(panel["targets"]):
            field_name = f"Value #{chr(ord('A') + i)}" if several else "Value"
            for s in await self.prom.instant(self.q(target["expr"]), self.end):
                labels = {k: v for k, v in s["metric"].items() if k in keep}
                row = rows.setdefault(tuple(sorted(labels.items())), dict(labels))
                if field_name in renames:
                    value = float(s["value"][1])
                    mapped = mappings.get(field_name, {}).get(f"{value:g}")
                    row[field_name] = mapped["text"] if mapped else fmt_value(
                        value, units.get(field_name),
                        places.get(field_name, panel["fieldConfig"]["defaults"].get("decimals", 3)))
        columns = [k for k in keep if any(k in r for r in rows.values())]
        if not rows or not columns:
            return
        sort_by = panel["options"].get("sortBy", [{}])[0]
        key = next((f for f, h in renames.items() if h == sort_by.get("displayName")),
                   sort_by.get("displayName"))
        ordered = sorted(rows.values(), key=lambda r: _sort_key(r.get(key, "")),
                         reverse=bool(sort_by.get("desc")))
        body = [[r.get(c, "") for c in columns] for r in ordered[:14]]
        table = ax.table(cellText=body, colLabels=[renames.get(c, c) for c in columns],
                         loc="upper center", cellLoc="left", colLoc="left")
        table.auto_set_font_size(False)
        table.set_fontsize(8)
        table.scale(1, 1.25)
        for (r, _c), cell in table.get_celld().items():
            cell.set_edgecolor("#ddd")
            if r == 0:
                cell.set_facecolor("#eef2f8")
                cell.set_text_props(fontweight="bold")
        d.values = len(body) * len(columns)

    async def bargauge(self, ax: Axes, panel: dict[str, Any], d: Drawn) -> None:
        unit = self._unit(panel)
        bars: list[tuple[str, float]] = []
        for target in panel["targets"]:
            result = await self.prom.instant(self.q(target["expr"]), self.end)
            if target.get("format") == "heatmap":
                bars += deaccumulate(result)
            else:
                bars += [(legend(target.get("legendFormat", ""), s["metric"]), float(s["value"][1]))
                         for s in result]
        if not bars:
            ax.axis("off")
            return
        names = [f"≤ {n}" if target_is_heatmap(panel) else n for n, _ in bars]
        values = [v for _, v in bars]
        ax.barh(range(len(values)), values, color="#5794f2")
        ax.set_yticks(range(len(values)), names, fontsize=7)
        ax.invert_yaxis()
        for i, v in enumerate(values):
            ax.text(v, i, " " + fmt_value(v, unit, 1), va="center", fontsize=7)
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: fmt_value(v, unit, 0)))
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xlim(0, max(max(values) * 1.25, 1e-9))
        d.values = len(values)

    async def heatmap(self, ax: Axes, panel: dict[str, Any], d: Drawn) -> None:
        target = panel["targets"][0]
        result = await self.prom.range(self.q(target["expr"]), self.start, self.end, self.step)
        if not result:
            return
        result.sort(key=lambda s: _le(s["metric"]["le"]))
        times = sorted({v[0] for s in result for v in s["values"]})
        index = {t: i for i, t in enumerate(times)}
        grid = np.zeros((len(result), len(times)))
        for row, s in enumerate(result):
            for t, v in s["values"]:
                grid[row, index[t]] = float(v)
        cells = np.diff(grid, axis=0, prepend=0.0).clip(min=0)
        keep = cells.sum(axis=1) > 0
        if not keep.any():
            return
        rows = np.flatnonzero(keep)
        shown = cells[rows[0]:rows[-1] + 1]
        ax.imshow(np.sqrt(shown), aspect="auto", origin="lower", cmap="Oranges", interpolation="nearest")
        labels = [result[i]["metric"]["le"] for i in range(rows[0], rows[-1] + 1)]
        unit = panel["options"]["yAxis"].get("unit")
        ax.set_yticks(range(len(labels)),
                      [("≤ " + fmt_value(_le(x), unit, 1)) if x != "+Inf" else "+Inf" for x in labels],
                      fontsize=7)
        ticks = np.linspace(0, len(times) - 1, 5).astype(int)
        ax.set_xticks(ticks, [time.strftime("%H:%M:%S", time.localtime(times[i])) for i in ticks],
                      fontsize=7)
        d.values = int(keep.sum()) * len(times)


def only_rows(panels: list[dict[str, Any]], rows: tuple[str, ...]) -> list[dict[str, Any]]:
    """The panels of the named rows, moved up over the rows left out."""
    sections: list[list[dict[str, Any]]] = [[]]
    for panel in sorted(panels, key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"])):
        if panel["type"] == "row":
            sections.append([])
        sections[-1].append(panel)
    out, removed = [], 0
    for section in sections[1:]:
        top = section[0]["gridPos"]["y"]
        bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in section)
        if section[0]["title"] not in rows:
            removed += bottom - top
            continue
        out += [{**p, "gridPos": {**p["gridPos"], "y": p["gridPos"]["y"] - removed}} for p in section]
    return out


def target_is_heatmap(panel: dict[str, Any]) -> bool:
    return any(t.get("format") == "heatmap" for t in panel["targets"])


def _sort_key(text: str) -> tuple[int, float | str]:
    try:
        return (0, float(text.rstrip("%").split()[0].replace(",", "")))
    except (ValueError, IndexError):
        return (1, text)


def _colour(name: str) -> str:
    return {"green": "#37872d", "orange": "#ff780a", "red": "#c4162a"}.get(name, name)


@dataclass(frozen=True)
class View:
    """One picture: a board with its variables filled in."""

    board: str  # file name in grafana/
    png: str  # file name of the picture
    variables: dict[str, str]
    rows: tuple[str, ...] = ()  # only these rows (default: the whole board)


VIEWS = (
    View("modelmon-fleet.json", "modelmon-fleet.png", {"job": "modelmon", "model": ".*"}),
    View("modelmon-model.json", "modelmon-model.png",
         {"job": "modelmon", "model": "demo", "feature": "amount", "method": "jensen_shannon"}),
    # a pushed model has no proxied traffic: only the rows that show it
    View("modelmon-model.json", "modelmon-model-regression.png",
         {"job": "modelmon", "model": "price", "feature": "district", "method": "jensen_shannon"},
         ("Drift", "Feature $feature against its reference", "Data quality", "Predictions",
          "Performance (once labels arrive)", "Segments (models[].segments)")),
    View("modelmon-sidecar.json", "modelmon-sidecar.png", {"job": "modelmon", "model": ".*"}),
)


async def render_all(prometheus: str, boards: dict[str, dict[str, Any]], views: tuple[View, ...],
                     start: float, end: float, out: Path) -> dict[str, list[Drawn]]:
    """Each view drawn into ``out/<png>``; what each panel drew, by picture."""
    async with aiohttp.ClientSession() as session:
        prom = Prometheus(session, prometheus)
        return {view.png: await Renderer(prom, view.variables, start, end).board(
                    boards[view.board], out / view.png, view.rows) for view in views}


async def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from dashboard_stack import live_stack
    from modelmon.mixin import MixinConfig
    from modelmon.mixin.dashboards import dashboards

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600, help="how long traffic runs first")
    parser.add_argument("--drift-after", type=float, default=360,
                        help="seconds of traffic before the inputs drift")
    parser.add_argument("--skip", type=float, default=240,
                        help="seconds left out at the start (the 5m rates are still filling)")
    parser.add_argument("--out", type=Path, default=ROOT / "grafana" / "previews")
    args = parser.parse_args()
    boards = {name: json.loads(text) for name, text in dashboards(MixinConfig()).items()}
    with tempfile.TemporaryDirectory(prefix="modelmon-previews-") as tmp:
        async with live_stack(Path(tmp), drift_after=args.drift_after) as stack:
            print(f"traffic for {args.seconds:g} s (drift after {args.drift_after:g} s) ...", flush=True)
            await asyncio.sleep(args.seconds)
            drawn = await render_all(stack.prometheus, boards, VIEWS, stack.started + args.skip,
                                     time.time(), args.out)
    for name, panels in drawn.items():
        empty = [p.title for p in panels if not p.values]
        print(f"{name}: {len(panels)} panels, empty: {empty or 'none'}")
        for p in panels:
            for error in p.errors:
                print(f"  {p.title}: {error}")


if __name__ == "__main__":
    asyncio.run(main())
