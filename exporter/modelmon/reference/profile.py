"""Reference profiles: what a model's inputs and outputs looked like in training.

A profile is a versioned JSON document (format documented in ``docs/profile.md``): per numeric
feature, quantile bin edges (with extra edges at the 1st and 99th percentile so thin tails get
their own bins) and reference counts in the bins ``(-inf, e0], (e0, e1], ..., (e_last, +inf)``,
plus min/max/mean/std and the missing rate; per categorical feature, the top-K categories with
counts and an "other" bucket. Its content hash is exported as an info metric, so every drift
number can be traced to the baseline it was computed against.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
import typing
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ..jsondecode import loads

FORMAT = "modelmon.profile"
FORMAT_VERSION = 1
DEFAULT_BINS = 20
DEFAULT_TOP_K = 20
TAIL_QUANTILES = (0.01, 0.99)
OTHER = "__other__"
# How CSV files (and pandas) spell a missing value. Such text is missing in a reference built
# from any source, and counted as null in live values: one spelling of "missing" on both sides.
MISSING_TEXT = frozenset({"", "na", "nan", "null", "none", "n/a", "NA", "NaN", "NULL", "None"})

Role = Literal["input", "output", "target"]
ROLES: tuple[str, ...] = typing.get_args(Role)


class ProfileError(ValueError):
    """A profile file is unreadable, of an unknown version, or inconsistent."""


@dataclass(frozen=True)
class NumericFeature:
    name: str
    role: Role
    edges: tuple[float, ...]
    counts: tuple[int, ...]  # len(edges) + 1 bins
    missing: int
    # Over the finite values; NaN when there are none (null in the file): see ``empty``.
    min: float
    max: float
    mean: float
    std: float
    kind: Literal["numeric"] = "numeric"

    @property
    def count(self) -> int:
        return sum(self.counts)

    @property
    def empty(self) -> bool:
        """The reference holds no value at all (every row missing): nothing to compare with.
        Older profiles stored min = max = 0 for such a column; the counts tell."""
        return self.count == 0

    def validate(self) -> None:
        if len(self.counts) != len(self.edges) + 1:
            raise ProfileError(f"feature {self.name!r}: {len(self.counts)} counts for "
                               f"{len(self.edges)} edges (want edges + 1)")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ProfileError(f"feature {self.name!r}: edges must be strictly increasing")
        if not all(math.isfinite(e) for e in self.edges):
            raise ProfileError(f"feature {self.name!r}: edges must be finite")


@dataclass(frozen=True)
class CategoricalFeature:
    name: str
    role: Role
    categories: tuple[str, ...]
    counts: tuple[int, ...]  # one per category, then the "other" bucket
    missing: int
    kind: Literal["categorical"] = "categorical"

    @property
    def count(self) -> int:
        return sum(self.counts)

    @property
    def empty(self) -> bool:
        return self.count == 0

    def validate(self) -> None:
        if len(self.counts) != len(self.categories) + 1:
            raise ProfileError(f"feature {self.name!r}: want one count per category plus 'other'")
        if len(set(self.categories)) != len(self.categories):
            raise ProfileError(f"feature {self.name!r}: duplicate categories")


Feature = NumericFeature | CategoricalFeature


@dataclass(frozen=True)
class Profile:
    model: str
    model_version: str
    rows: int
    features: tuple[Feature, ...]
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    source: str = ""

    def content(self) -> dict[str, Any]:
        """The hashed part: everything but the creation time and the hash itself."""
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "model": self.model,
            "model_version": self.model_version, "rows": self.rows, "source": self.source,
            "features": [_feature_dict(f) for f in self.features],
        }

    @property
    def hash(self) -> str:
        canonical = json.dumps(self.content(), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()

    def to_json(self) -> str:
        doc = {**self.content(), "created_at": self.created_at, "hash": self.hash}
        return json.dumps(doc, indent=1) + "\n"

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    def inputs(self) -> list[Feature]:
        return [f for f in self.features if f.role == "input"]

    def outputs(self) -> list[Feature]:
        return [f for f in self.features if f.role == "output"]


def _feature_dict(f: Feature) -> dict[str, Any]:
    d = asdict(f)
    for key, value in d.items():
        if isinstance(value, tuple):
            d[key] = list(value)
        elif isinstance(value, float) and not math.isfinite(value):
            d[key] = None  # the statistics of a column without values: null, plain JSON
    return d


def _stat(value: Any) -> float:
    return math.nan if value is None else float(value)


def load_profile(path: str | Path) -> Profile:
    try:
        doc = loads(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise ProfileError(f"{path}: cannot read profile: {exc}") from None
    return profile_from_dict(doc, str(path))


def profile_from_dict(doc: Mapping[str, Any], where: str = "profile") -> Profile:
    if not isinstance(doc, Mapping) or doc.get("format") != FORMAT:
        raise ProfileError(f"{where}: not a modelmon profile (format must be {FORMAT!r})")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ProfileError(f"{where}: unsupported profile format_version {doc.get('format_version')!r}")
    features: list[Feature] = []
    try:
        for i, raw in enumerate(doc["features"]):
            raw = dict(raw)
            kind = raw.pop("kind")
            if raw.get("role") not in ROLES:
                raise ProfileError(f"{where}: features[{i}].role must be one of {', '.join(ROLES)}, "
                                   f"got {raw.get('role')!r}")
            if kind == "numeric":
                f: Feature = NumericFeature(
                    raw["name"], raw["role"], tuple(float(e) for e in raw["edges"]),
                    tuple(int(c) for c in raw["counts"]), int(raw["missing"]), _stat(raw["min"]),
                    _stat(raw["max"]), _stat(raw["mean"]), _stat(raw["std"]))
            elif kind == "categorical":
                f = CategoricalFeature(raw["name"], raw["role"], tuple(str(c) for c in raw["categories"]),
                                       tuple(int(c) for c in raw["counts"]), int(raw["missing"]))
            else:
                raise ProfileError(f"{where}: feature kind {kind!r} unknown")
            f.validate()
            features.append(f)
        profile = Profile(str(doc["model"]), str(doc.get("model_version", "")), int(doc["rows"]),
                          tuple(features), str(doc.get("created_at", "")), str(doc.get("source", "")))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ProfileError):
            raise
        what = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ProfileError(f"{where}: malformed profile: {what}") from None
    names = [f.name for f in features]
    if len(names) != len(set(names)):
        raise ProfileError(f"{where}: duplicate feature names")
    if "hash" in doc and doc["hash"] != profile.hash:
        raise ProfileError(f"{where}: content hash mismatch (file edited by hand?)")
    return profile


# --- building ------------------------------------------------------------------------------------

# An atom's own bin reaches this far below it (relative): past float32 rounding (2^-24), so a
# float32 reference value and the shortest decimal a client writes for it share the bin, while
# neighbouring integers up to 2^23 stay apart.
ATOM_MARGIN = 2.0**-23


def quantile_edges(values: NDArray[np.float64], bins: int = DEFAULT_BINS) -> tuple[float, ...]:
    """Interior bin edges at ``bins`` equal-probability quantiles plus the 1st and 99th
    percentiles; duplicates (discrete or constant data) collapse. Values equal to an edge fall
    in the bin below it (Prometheus ``le`` semantics).

    Where quantiles collapse, the reference has a point mass (an atom: a constant column, the
    zeros of a zero-inflated one, the values of a discrete one). The lowest atom ``e`` gets a
    second edge just below it (``e - |e| * ATOM_MARGIN``, or the float below 0), so that it has
    a bin of its own: otherwise the values below it -- a constant reference shifted down, a
    reference all identical but one lower value, anything below a discrete column's minimum --
    share its bin, and no binned statistic can see them move. (Above an atom they never share:
    bins are closed on the right. Atoms higher up keep sharing their bin with the values just
    below them, the ordinary resolution of a bin: an edge under every atom would leave empty
    bins between a discrete column's values, which smoothing turns into distance noise.) The
    atom absorbed at least one quantile, so this never makes more than ``bins + 1`` edges."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return ()
    probs = np.unique(np.concatenate([np.linspace(0.0, 1.0, bins + 1)[1:-1], TAIL_QUANTILES]))
    raw = np.quantile(finite, probs, method="linear")
    edges, multiplicity = np.unique(raw, return_counts=True)
    out = edges.tolist()
    atoms = np.flatnonzero(multiplicity > 1)
    if atoms.size:
        i = int(atoms[0])
        e = out[i]
        below = e - abs(e) * ATOM_MARGIN if e != 0.0 else -math.ulp(0.0)
        if below < e and (i == 0 or below > out[i - 1]):
            out.insert(i, below)
    return tuple(float(e) for e in out)


_POW10 = np.array([10.0**k for k in range(23)])  # exact: 10^22 is the last power of ten a float64 holds
_INV10 = np.array([10.0**-k for k in range(23)])
_HALF_DECIMALS: NDArray[np.float64] | None = None  # every float16, by its bits, as its decimal


def decimal_floats(values: NDArray[Any]) -> NDArray[np.float64]:
    """``values`` as float64 numbers, each float32 value as the float64 of its shortest decimal.

    A float32 value means what its shortest decimal says: ``float32(0.1)`` is ``0.1``, not
    ``0.10000000149011612`` -- the text NumPy's ``str`` gives, what orjson and most clients
    write for it and what a CSV file written from it holds. Its exact value, widened to
    float64, is what ``tolist()``, tritonclient's JSON and binary FP32 tensors give, so a
    float64 that is exactly some float32's value (and not an integer) is read as that
    float32 too: 0.699999988079071 is 0.7 (a float64 that is no float32's value, 0.7 or any
    other, is itself). Applied to the reference (float32 columns of Parquet and NumPy files,
    every float column) and to live numbers (``drift.columns.numeric_values``), every
    spelling of a float32 falls in the bin, and inside the range, of its decimal. float16
    arrays are read as their own shortest decimals (``float16(0.1)`` is ``0.1``).

    Integers are exact in float32 up to 2^24 and stay integers beyond (NumPy writes float32
    41851352 as 41851350.0: another integer; 3.0 being 3 everywhere, an integer is its
    value). Otherwise equal to ``float(str(v))`` of the float32 (checked on every float32 bit
    pattern); vectorised, several times faster than ``astype(str)``."""
    global _HALF_DECIMALS
    if values.ndim != 1:
        return decimal_floats(values.ravel()).reshape(values.shape)
    if values.dtype == np.float16:
        if _HALF_DECIMALS is None:
            every = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
            _HALF_DECIMALS = every.astype(str).astype(np.float64)
        return _HALF_DECIMALS[np.ascontiguousarray(values).view(np.uint16)]
    if values.dtype == np.float64:
        with np.errstate(over="ignore", invalid="ignore"):
            narrow = values.astype(np.float32)
        exact = narrow == values  # NaN, and values beyond float32's range: not exact
        if not exact.any():
            return values
        exact &= values != np.floor(values)  # integers (and +-inf) are themselves
        if not exact.any():
            return values
        out = values.copy()
        out[exact] = decimal_floats(narrow[exact])
        return out
    if values.dtype != np.float32:
        return values.astype(np.float64)
    if values.size > 10_000:
        # A column of few distinct values (a discrete one): each spelled once. (By their bits:
        # -0.0 stays -0.0. Which way is taken changes the time, not the values.)
        bits = np.ascontiguousarray(values).view(np.uint32)
        probe = bits[::values.size // 2048]
        if np.unique(probe).size * 4 < probe.size:
            distinct, where = np.unique(bits, return_inverse=True)
            return decimal_floats(distinct.view(np.float32))[where]
    with np.errstate(invalid="ignore"):
        out = values.astype(np.float64)
    magnitude = np.abs(out)
    fraction = np.isfinite(magnitude) & (magnitude != np.floor(magnitude))  # integers stay
    # Where every power of ten the search below needs is exact in float64 (non-integral
    # float32 values are below 2^23); the rest (below 1e-13, rare in data) is spelled by NumPy
    # one value at a time.
    slow = fraction & (magnitude < 1e-13)
    if slow.any():
        out[slow] = values[slow].astype(str).astype(np.float64)
    idx = np.flatnonzero(fraction & ~slow)
    if not idx.size:
        return out
    a = magnitude[idx]
    target = a.astype(np.float32)
    e = np.floor(np.log10(a)).astype(np.int64)  # the leading digit's place, or one off
    # The shortest decimal is the one with the fewest digits that reads back as the float32
    # (if one with p digits does, one with p + 1 does too), the nearer one when two do. Most
    # float32 values need 8 or 9 digits: start at 8 and go down (10 if e came out one too
    # high), and up while fewer digits still read back.
    place = e - 7
    best, ok = _nearest_decimal(a, target, place)
    longer = np.flatnonzero(~ok)
    for digits in (9, 10):
        if not longer.size:
            break
        d, found = _nearest_decimal(a[longer], target[longer], e[longer] - (digits - 1))
        best[longer[found]] = d[found]
        longer = longer[~found]
    if longer.size:  # not reached (checked exhaustively); NumPy's text if it were
        best[longer] = target[longer].astype(str).astype(np.float64)
    shorter = np.flatnonzero(ok)
    while shorter.size:
        up = place[shorter] + 1
        d, found = _nearest_decimal(a[shorter], target[shorter], up)
        shorter = shorter[found]
        best[shorter] = d[found]
        place[shorter] = up[found]
        shorter = shorter[place[shorter] <= e[shorter]]  # up to one digit, at e + 1
    out[idx] = np.copysign(best, out[idx])
    return out


def _nearest_decimal(a: NDArray[np.float64], target: NDArray[np.float32], place: NDArray[np.int64]
                     ) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """For each ``a`` (a positive float32's value), the multiples ``m * 10^place`` just below
    and above it as float64 (each rounded once from the exact decimal: the power of ten is
    exact, so this is ``float()`` of its text); of those that read back as ``target`` the
    nearer, ties to the even ``m`` (NumPy's Dragon4). ``found`` is False where neither does."""
    below = place < 0
    k = np.abs(place)
    scale = _POW10[k]
    # a / 10^place, inexact where place > 0; only m's neighbourhood matters, both are tried
    q = a * np.where(below, scale, _INV10[k])
    m = np.floor(q)
    frac = q - m
    lo = np.empty_like(a)
    hi = np.empty_like(a)
    np.divide(m, scale, out=lo, where=below)
    np.multiply(m, scale, out=lo, where=~below)
    m += 1
    np.divide(m, scale, out=hi, where=below)
    np.multiply(m, scale, out=hi, where=~below)
    lo_ok = lo.astype(np.float32) == target
    hi_ok = hi.astype(np.float32) == target
    take_hi = hi_ok & (~lo_ok | (frac > 0.5) | ((frac == 0.5) & (m % 2 == 0)))
    return np.where(take_hi, hi, lo), lo_ok | hi_ok


def bin_counts(values: NDArray[np.float64], edges: tuple[float, ...]) -> NDArray[np.int64]:
    finite = values[np.isfinite(values)]
    idx = np.searchsorted(np.asarray(edges), finite, side="left")
    return np.bincount(idx, minlength=len(edges) + 1).astype(np.int64)


def numeric_feature(name: str, values: Iterable[Any] | NDArray[Any], role: Role = "input",
                    bins: int = DEFAULT_BINS) -> NumericFeature:
    """Profile one numeric column held in memory (the streaming builder does the same in chunks;
    float32 values are read as their decimals, see ``decimal_floats``)."""
    arr = decimal_floats(values if isinstance(values, np.ndarray) else np.asarray(values, dtype=np.float64))
    finite = arr[np.isfinite(arr)]
    edges = quantile_edges(finite, bins)
    counts = bin_counts(finite, edges) if finite.size else np.zeros(1, dtype=np.int64)
    nan = math.nan  # no values: no min, max, mean or std (null in the file)
    return NumericFeature(
        name, role, edges, tuple(int(c) for c in counts), int(arr.size - finite.size),
        float(finite.min()) if finite.size else nan, float(finite.max()) if finite.size else nan,
        float(finite.mean()) if finite.size else nan, float(finite.std()) if finite.size else nan,
    )


def categorical_feature(name: str, values: Iterable[Any], role: Role = "input",
                        top_k: int = DEFAULT_TOP_K) -> CategoricalFeature:
    counts: dict[str, int] = {}
    missing = 0
    for v in values:
        if is_missing(v):
            missing += 1
            continue
        key = category_key(v)
        counts[key] = counts.get(key, 0) + 1
    return categorical_from_counts(name, counts, missing, role, top_k)


def categorical_from_counts(name: str, counts: Mapping[str, int], missing: int, role: Role,
                            top_k: int, other: int = 0) -> CategoricalFeature:
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    top = ranked[:top_k]
    rest = other + sum(c for _, c in ranked[top_k:])
    return CategoricalFeature(name, role, tuple(k for k, _ in top),
                              (*(c for _, c in top), rest), missing)


def reference_note(f: Feature, min_values: int) -> str | None:
    """What drift monitoring can say of ``f`` when its reference is degenerate (None when it
    is not): for ``modelmon profile``'s output and the sidecar's log (see docs/drift.md)."""
    n = f.count
    if n == 0:
        return ("the reference holds no values (every row missing): no drift scores, p-values or "
                "verdict, and no out-of-range or unseen-category counts; values, quality events "
                "and the missing ratio are still counted")
    if n < min_values:
        return (f"the reference holds only {n} value(s), fewer than drift.min_samples "
                f"({min_values}): no drift scores, p-values or verdict")
    if isinstance(f, NumericFeature) and f.min == f.max:
        return (f"the reference holds a single value ({f.min!r}): any other value is out of "
                "range and, once enough arrive, drift; the normalised Wasserstein distance is "
                "not defined (std 0) and not exported")
    return None


def canonical_categories(f: CategoricalFeature) -> CategoricalFeature:
    """``f`` with its categories under their canonical keys: a profile written before keys
    were canonical (``True``, ``3.0``) is read as if built today, categories that now share a
    key merged (their counts added, in the first one's place). The profile's hash is the
    file's: only the sidecar's view of it changes."""
    keys = [category_key(c) for c in f.categories]
    if keys == list(f.categories):
        return f
    merged: dict[str, int] = {}
    for key, count in zip(keys, f.counts, strict=False):
        merged[key] = merged.get(key, 0) + count
    return replace(f, categories=tuple(merged), counts=(*merged.values(), f.counts[-1]))


def canonical_numbers(f: NumericFeature) -> NumericFeature:
    """``f`` with its edges, minimum and maximum read as live numbers are (``decimal_floats``):
    a profile built from float32 data before they were read as decimals (an edge and the
    maximum at 1.100000023841858, where live values, decimal or widened, are read as 1.1) is
    read as if built today -- its edges only if they stay strictly increasing. The profile's
    hash is the file's: only the sidecar's view of it changes. Profiles built now are read as
    they are, unless an interpolated edge happens to be a float32's exact value."""
    read = decimal_floats(np.asarray(f.edges, dtype=np.float64))
    edges = tuple(read.tolist()) if bool(np.all(np.diff(read) > 0)) else f.edges
    low, high = decimal_floats(np.array([f.min, f.max])).tolist()
    if edges == f.edges and low == f.min and high == f.max:
        return f
    if f.empty:  # no range (NaN), nothing to read
        return replace(f, edges=edges)
    return replace(f, edges=edges, min=low, max=high)


def is_missing(value: Any) -> bool:
    """A missing value however a source spells it: None, NaN, or MISSING_TEXT (as text or
    bytes, surrounding blanks ignored)."""
    if value is None:
        return True
    if isinstance(value, float | np.floating):
        return bool(value != value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    return isinstance(value, str) and value.strip() in MISSING_TEXT


# A JSON number (RFC 8259 section 6). Text spelled so is the number it spells: "3.0" is 3,
# as CSV files write the integers of a float column.
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


def category_key(value: Any) -> str:
    """The one spelling a categorical value is counted under, whatever its source wrote.

    A value in a reference built from CSV, Parquet or NumPy and the same value decoded from a
    live JSON payload get the same key: booleans are ``true``/``false`` (JSON ``true``, Python
    and pandas ``True``, ``TRUE``); an integral number is its integer digits (``3`` for JSON
    ``3`` and ``3.0``, CSV ``3.0``, NumPy ``int8(3)`` and ``float32(3)``), every digit of it
    (``2**53 + 1`` from JSON, CSV text, int64/uint64 columns); other numbers the shortest text
    that reads back as the same float64, except that a float32 value is its shortest float32
    decimal however it comes: ``float32(0.1)``, the decimal ``0.1`` a client writes for it, and
    its exact value widened to float64, ``0.10000000149011612`` (what ``tolist()``,
    tritonclient's JSON and binary FP32 tensors give), are all ``0.1`` (a float64 that is
    exactly some float32's value is read as that float32); text that spells a JSON number is
    that number (``"3.0"`` -> ``3``; ``"007"``, ``"+3"``, ``" 3"`` stay text); bytes are UTF-8
    text. (JSON integers beyond 64 bits are read as floats by the dialect.) A JSON array or
    object is no category: it gets a fixed key, never its repr (as large as the payload, and
    recursive). Keys are their own keys: ``category_key(category_key(v)) == category_key(v)``."""
    kind = type(value)
    if kind is str:
        return _text_key(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        return _float_key(value)
    if isinstance(value, np.generic):
        if isinstance(value, np.bool_):
            return "true" if value else "false"
        if isinstance(value, np.floating) and value.dtype.itemsize < 8:
            return _float_key(float(str(value)))  # NumPy's shortest text for a float32/float16
        return category_key(value.item())
    if isinstance(value, list | dict):
        return "[...]" if isinstance(value, list) else "{...}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return category_key(int(value))
    if isinstance(value, float):
        return _float_key(float(value))
    if isinstance(value, bytes | bytearray):
        return _text_key(bytes(value).decode("utf-8", "backslashreplace"))
    return _text_key(str(value))  # Decimal, dates, ...: their text, canonical as text is


def _float_key(value: float) -> str:
    if value != value:
        return "nan"
    if value in (math.inf, -math.inf):
        return "inf" if value > 0 else "-inf"
    if value.is_integer():
        return str(int(value))
    try:
        narrowed = _FLOAT32.unpack(_FLOAT32.pack(value))[0]
    except OverflowError:  # beyond float32's range
        return repr(value)
    if narrowed == value:  # a float32's exact value: that float32, as its shortest decimal
        return repr(float(str(np.float32(value))))
    return repr(value)


_FLOAT32 = struct.Struct("<f")


def _text_key(text: str) -> str:
    if not text:
        return text
    first = text[0]
    if "0" <= first <= "9" or first == "-":
        number = _JSON_NUMBER.fullmatch(text)
        if number is None:
            return text
        if number.group(1) is None and number.group(2) is None:  # integer digits: exact
            return "0" if text == "-0" else text
        return _float_key(float(text))
    if len(text) in (4, 5):
        lower = text.lower()
        if lower in ("true", "false"):
            return lower
    return text
