"""Reading training data in chunks: CSV, Parquet (optional pyarrow) and NumPy files.

``open_source`` reads a file's column names; ``Source.chunks`` then yields ``{column: values}``
chunks of the columns asked for, so files larger than memory stream through (and a second pass
reads the file again). A column comes in one of two forms:

- **Numbers**: a float64 array, missing values as NaN. Integers are converted (a numeric
  feature's bins are floats); float32 and float16 values become the float64 of their shortest
  decimal (``profile.decimal_floats``: ``float32(0.1)`` is ``0.1``), the value a client sends
  and a CSV file holds, and so does a float64 that is exactly a float32's value
  (``0.10000000149011612``, float32 data widened), as live values are read: edges, minimum
  and maximum are spelled as live values are.
- **Values**: an object array of the source's own values, missing values as None (or as the
  source spells them: ``profile.is_missing``), which ``profile.category_key`` spells the way it
  spells live JSON values. CSV text as written (``02134``, ``+3``, `` 3`` stay text, as they
  are in live JSON; ``3.0`` is the number 3 there too); Parquet and NumPy values as they are:
  strings, bytes, booleans, integers as Python ints with every digit (int64 and uint64 past
  2^53 too), float32 as its decimal.

Columns named in ``keyed`` (the categorical ones the caller knows of) always come as values.
Other columns come as numbers when they hold numbers: Parquet/NumPy integer and float columns;
CSV columns whose text all parses as numbers, decided by the first chunk -- a CSV column with
other text in its first chunk comes as values to the end of the file, and a column that was
numbers but holds other text further on comes as values in that chunk (the caller reports it).
Everything else comes as values; booleans in every source, as they are in a CSV file
(``True``/``False``): categorical, counted as ``true``/``false``.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .profile import MISSING_TEXT, decimal_floats

CHUNK_ROWS = 65_536

Chunk = dict[str, NDArray[Any]]
Progress = Callable[[int, float | None], None]  # (rows so far, fraction done or None)


class DataSourceError(ValueError):
    pass


class Source:
    """An opened data file: its column names, and its columns in chunks, as often as asked."""

    def __init__(self, path: Path, header: list[str],
                 reader: Callable[[Sequence[str], Collection[str], Progress | None], Iterator[Chunk]]):
        self.path = path
        self.header = header
        self._reader = reader

    def chunks(self, columns: Sequence[str], keyed: Collection[str] = (),
               progress: Progress | None = None) -> Iterator[Chunk]:
        """Chunks of ``columns`` (names in ``header``); those in ``keyed`` as values."""
        missing = [c for c in columns if c not in self.header]
        if missing:
            raise DataSourceError(f"{self.path}: no column {missing[0]!r}")
        return self._reader(columns, frozenset(keyed), progress)


def text_values(raw: Sequence[str]) -> NDArray[Any]:
    """CSV text as values: as written, None where it spells a missing value."""
    return np.fromiter((None if v.strip() in MISSING_TEXT else v for v in raw), dtype=object,
                       count=len(raw))


def text_numbers(raw: Sequence[str]) -> NDArray[np.float64] | None:
    """CSV text as float64 numbers (missing text as NaN), or None if some text is no number.
    Text that is a float32's exact value (``0.699999988079071``) is that float32's decimal, as
    everywhere (``profile.decimal_floats``)."""
    try:
        numbers = np.asarray(["nan" if v.strip() in MISSING_TEXT else v for v in raw], dtype=np.float64)
    except ValueError:
        return None
    return decimal_floats(numbers)


def _read_csv(path: Path) -> Source:
    with open(path, newline="", encoding="utf-8") as handle:
        try:
            header = next(csv.reader(handle))
        except StopIteration:
            raise DataSourceError(f"{path}: empty CSV file") from None
    size = os.path.getsize(path)

    def chunks(columns: Sequence[str], keyed: Collection[str], progress: Progress | None
               ) -> Iterator[Chunk]:
        where = [header.index(c) for c in columns]
        text = set(keyed)  # columns read as values to the end
        first = True
        rows_done = 0
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            next(reader)
            while True:
                rows = []
                for row in reader:
                    if len(row) != len(header):
                        raise DataSourceError(
                            f"{path}: line {reader.line_num}: {len(row)} fields, header has {len(header)}")
                    rows.append(row)
                    if len(rows) >= CHUNK_ROWS:
                        break
                if not rows:
                    return
                rows_done += len(rows)
                out: Chunk = {}
                transposed = list(zip(*rows, strict=True))
                for name, i in zip(columns, where, strict=True):
                    raw = transposed[i]
                    numbers = None if name in text else text_numbers(raw)
                    if numbers is None:
                        out[name] = text_values(raw)
                        if first:
                            text.add(name)
                    else:
                        out[name] = numbers
                first = False
                yield out
                if progress is not None:
                    progress(rows_done, _tell(handle) / size if size else None)

    return Source(path, header, chunks)


def _tell(handle: io.TextIOWrapper) -> float:
    try:
        return float(os.lseek(handle.fileno(), 0, os.SEEK_CUR))
    except OSError:
        return 0.0


def as_column(values: NDArray[Any], keyed: bool) -> NDArray[Any]:
    """A Parquet or NumPy column's values as numbers (integer and float dtypes, unless
    ``keyed``) or as values (see the module docstring)."""
    kind = values.dtype.kind
    if kind == "f":
        values = decimal_floats(values)
    if kind in "iuf" and not keyed:
        return values.astype(np.float64, copy=False)
    # Python values (int with every digit, float, bool, str, bytes, None, ...), spelled by
    # category_key; one element per row even when the rows are lists
    return np.fromiter(values.tolist(), dtype=object, count=len(values))


def _read_numpy(path: Path, names: list[str] | None) -> Source:
    """A 2-D ``.npy`` (memory-mapped, columns named by ``names`` or f0, f1, ...) or an ``.npz``
    of equally long 1-D arrays, one per column."""
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            header = list(archive.files)
            lengths = {len(archive[k]) for k in header}
        if len(lengths) != 1:
            raise DataSourceError(f"{path}: arrays differ in length: {sorted(lengths)}")
        total = lengths.pop()

        def npz_chunks(columns: Sequence[str], keyed: Collection[str], progress: Progress | None
                       ) -> Iterator[Chunk]:
            with np.load(path, allow_pickle=False) as archive:
                for start in range(0, total, CHUNK_ROWS):
                    yield {k: as_column(archive[k][start:start + CHUNK_ROWS], k in keyed) for k in columns}
                    if progress is not None:
                        progress(min(start + CHUNK_ROWS, total), min(1.0, (start + CHUNK_ROWS) / total))

        return Source(path, header, npz_chunks)
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    if array.ndim != 2:
        raise DataSourceError(f"{path}: want a 2-D array (rows x features), got shape {array.shape}")
    header = names or [f"f{i}" for i in range(array.shape[1])]
    if len(header) != array.shape[1]:
        raise DataSourceError(f"{path}: {array.shape[1]} columns but {len(header)} feature names")

    def npy_chunks(columns: Sequence[str], keyed: Collection[str], progress: Progress | None
                   ) -> Iterator[Chunk]:
        total = array.shape[0]
        where = [header.index(c) for c in columns]
        for start in range(0, total, CHUNK_ROWS):
            block = np.asarray(array[start:start + CHUNK_ROWS])
            yield {name: as_column(block[:, i], name in keyed)
                   for name, i in zip(columns, where, strict=True)}
            if progress is not None:
                progress(min(start + CHUNK_ROWS, total), min(1.0, (start + CHUNK_ROWS) / total))

    return Source(path, header, npy_chunks)


def _read_parquet(path: Path) -> Source:
    try:
        import pyarrow as pa  # type: ignore[import-not-found, import-untyped, unused-ignore]
        import pyarrow.parquet as pq  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        raise DataSourceError("reading Parquet needs pyarrow: pip install 'modelmon[parquet]'") from None
    parquet = pq.ParquetFile(path)
    header = [str(n) for n in parquet.schema_arrow.names]
    total = parquet.metadata.num_rows

    def parquet_column(column: Any, keyed: bool) -> NDArray[Any]:
        if keyed and pa.types.is_integer(column.type) and column.null_count:
            # to_numpy would give floats (NaN for null): the integers with every digit instead
            values = as_column(np.asarray(column.fill_null(0).to_numpy()), True)
            values[np.asarray(column.is_null().to_numpy(zero_copy_only=False))] = None
            return values
        return as_column(np.asarray(column.to_numpy(zero_copy_only=False)), keyed)

    def chunks(columns: Sequence[str], keyed: Collection[str], progress: Progress | None
               ) -> Iterator[Chunk]:
        done = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=CHUNK_ROWS, columns=list(columns)):
            yield {name: parquet_column(batch.column(name), name in keyed) for name in columns}
            done += batch.num_rows
            if progress is not None:
                progress(done, done / total if total else None)

    return Source(path, header, chunks)


def open_source(path: str | Path, names: list[str] | None = None) -> Source:
    p = Path(path)
    if not p.exists():
        raise DataSourceError(f"{p}: no such file")
    suffix = p.suffix.lower()
    if suffix in (".csv", ".txt"):
        return _read_csv(p)
    if suffix in (".npy", ".npz"):
        return _read_numpy(p, names)
    if suffix in (".parquet", ".pq"):
        return _read_parquet(p)
    raise DataSourceError(f"{p}: unknown file type {suffix!r} (want .csv, .parquet, .npy or .npz)")
