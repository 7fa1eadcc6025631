"""The one JSON dialect modelmon reads: proxied bodies, ``POST /v1/records`` (JSON and NDJSON),
``POST /v1/labels`` and profile files all go through :func:`loads`.

The dialect is RFC 8259 JSON in UTF-8, with what real clients send on top of it:

- the tokens ``NaN``, ``Infinity`` and ``-Infinity`` (Python's ``json.dumps`` writes them for
  non-finite floats, and so do many model servers) read as floats, so such values are counted
  as ``nan``/``inf`` instead of losing the whole body;
- integers within -2^63..2^64-1 read as exact ints; other integers as floats (their digits
  rounded), and every number beyond the float range as ±infinity (RFC 8259 section 6 lets a
  parser limit range and precision). No number, however long, makes a body unreadable, and
  nothing downstream ever sees an integer that NumPy or ``float()`` cannot hold;
- a leading UTF-8 byte order mark is ignored (RFC 8259 section 8.1 allows it).

Refused (``JSONDecodeError``): anything else that is not JSON, text that is not UTF-8, an
escaped UTF-16 surrogate without its pair (``"\\ud800"``: not a character, and a label value
holding one could not be encoded at a scrape) and nesting deeper than the parsers' limits
(1,024 levels for orjson; the stdlib parser may stop somewhat earlier).

orjson reads every body it can (the fast path); a body it refuses is read again by the stdlib
parser, set up to give the same values, so whether a body takes the fast path never changes
what is read (``tests/test_data_quality.py`` checks this on generated documents).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

__all__ = ["JSONDecodeError", "loads"]

_BOM = b"\xef\xbb\xbf"
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # the integers orjson reads as ints
# An escaped UTF-16 surrogate: only then can the stdlib parser produce a lone one.
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


class JSONDecodeError(ValueError):
    """The body is not in modelmon's JSON dialect."""


def _int(text: str) -> int | float:
    # float() of a decimal string never raises: beyond the float range it is ±inf. int() of a
    # long one would (sys.get_int_max_str_digits), and a long int breaks NumPy later.
    if len(text) <= 20:
        value = int(text)
        if _INT_MIN <= value <= _INT_MAX:
            return value
    return float(text)


_fallback = json.JSONDecoder(parse_int=_int)


def loads(data: bytes | str) -> Any:
    """Decode one JSON document in modelmon's dialect (see the module docstring)."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")  # a lone surrogate fails the UTF-8 check below
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        error = exc
    return _slow_loads(data, error)


def _slow_loads(data: bytes, error: Exception | None = None) -> Any:
    """The stdlib parser, giving the values orjson gives (``loads`` without the fast path)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JSONDecodeError(f"not UTF-8: {exc}") from None
    try:
        value = _fallback.decode(text)
    except json.JSONDecodeError as exc:  # where the dialect fails (orjson may have stopped at a NaN)
        raise JSONDecodeError(str(exc)) from None
    except RecursionError:
        raise JSONDecodeError(str(error) if error else "nesting depth limit exceeded") from None
    if _ESCAPED_SURROGATE.search(text) and _has_lone_surrogate(value):
        raise JSONDecodeError("a string holds an escaped UTF-16 surrogate without its pair")
    return value


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            strings: list[Any] = [item]
        elif isinstance(item, dict):
            strings = list(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
            continue
        else:
            continue
        for s in strings:
            if not s.isascii():
                try:
                    s.encode("utf-8")
                except UnicodeEncodeError:
                    return True
    return False
