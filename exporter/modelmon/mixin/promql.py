"""Building PromQL from catalogue specs: every metric name in a rule comes from a ``MetricSpec``
(or from a recording rule defined here), and every selector carries the configured matchers."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..metrics import catalogue as cat
from .config import MixinConfig, parse_matchers

_SUFFIXES = {
    cat.Kind.COUNTER: ("",),
    cat.Kind.GAUGE: ("",),
    cat.Kind.INFO: ("",),
    cat.Kind.HISTOGRAM: ("bucket", "count", "sum"),
    cat.Kind.SUMMARY: ("count", "sum"),
}


def series_name(spec: cat.MetricSpec, suffix: str = "") -> str:
    """The name of one of ``spec``'s series as Prometheus stores it."""
    if suffix not in _SUFFIXES[spec.kind]:
        raise ValueError(f"{spec.name} is a {spec.kind.value}: no _{suffix} series")
    return f"{spec.exposed_name}_{suffix}" if suffix else spec.exposed_name


@dataclass(frozen=True)
class Rule:
    """A recording rule."""

    record: str
    expr: str
    labels: dict[str, str] = field(default_factory=dict)
    help: str = ""


class PromQL:
    """Selectors and aggregation clauses for one configuration."""

    def __init__(self, config: MixinConfig) -> None:
        self.config = config
        self.agg = tuple(config.aggregation_labels)
        # the matchers as one canonical string, also checked to parse
        self.matchers = ", ".join(f'{n}{op}"{v}"' for n, op, v in parse_matchers(config.selector))

    def sel(self, spec: cat.MetricSpec, suffix: str = "", extra: str = "") -> str:
        """``name{<configured matchers>, extra}`` for a catalogue metric."""
        for label, _op, _value in parse_matchers(extra):
            if label not in (*spec.labels, "le", "quantile"):
                raise ValueError(f"{spec.name} has no label {label!r}")
        return self._selector(series_name(spec, suffix), extra)

    def up(self) -> str:
        """Prometheus' own ``up`` series of the modelmon targets."""
        return self._selector("up", "")

    def rec(self, rule: Rule | str, extra: str = "") -> str:
        """A recorded series, scoped by the same matchers (the aggregations keep their labels)."""
        return self._selector(rule.record if isinstance(rule, Rule) else rule, extra)

    def _selector(self, name: str, extra: str) -> str:
        return f"{name}{{{self.matchers}{', ' + extra if extra else ''}}}"

    def by(self, *labels: str) -> str:
        """``by (<aggregation labels>, labels...)``."""
        return f"by ({', '.join((*self.agg, *labels))})"

    def on(self, *labels: str) -> str:
        return f"on ({', '.join((*self.agg, *labels))})"


def indent(expr: str, spaces: int = 2) -> str:
    return "\n".join(" " * spaces + line if line else line for line in expr.splitlines())


def matcher(label: str, op: str, value: str) -> str:
    """One label matcher, ``label op "value"`` (the value's quotes and backslashes escaped)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{label}{op}"{escaped}"'


def ratio_or_zero(num: str, den: str, counted_if: str | None = None) -> str:
    """``num / den`` that reads 0, not nothing, where the numerator has no series yet (a counter
    appears with its first increment); with ``counted_if``, only while that series exists at all
    (a model that never counts positives has no positive rate, rather than a rate of 0)."""
    zero = f"0 * {den}" if counted_if is None else f"(0 * {den} unless on () absent({counted_if}))"
    return f"(\n  {num}\n  or\n  {zero}\n)\n/\n{den}"
