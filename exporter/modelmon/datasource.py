"""Reading training data in chunks: CSV, Parquet (optional pyarrow) and NumPy files.

Every reader yields ``{column: values}`` chunks, so files larger than memory stream through.
Numeric columns come as float64 arrays (missing values as NaN); other columns as object
arrays of their values -- text (CSV), or the source's own values (Parquet, NumPy: strings,
bytes, booleans, ...), missing values as None -- which ``profile.category_key`` spells the way
it spells live JSON values. Boolean columns are of the second kind in every source, as they are
in a CSV file (``True``/``False``): categorical, counted as ``true``/``false``.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .profile import MISSING_TEXT

CHUNK_ROWS = 65_536

Chunk = dict[str, NDArray[Any]]
Progress = Callable[[int, float | None], None]  # (rows so far, fraction done or None)


class DataSourceError(ValueError):
    pass


def column_values(raw: list[str]) -> NDArray[Any]:
    """Float64 if every non-missing value parses as a number, else strings (None = missing)."""
    cleaned = ["nan" if v.strip() in MISSING_TEXT else v for v in raw]
    try:
        return np.asarray(cleaned, dtype=np.float64)
    except ValueError:
        return np.asarray([None if v.strip() in MISSING_TEXT else v for v in raw], dtype=object)


def read_csv(path: Path, progress: Progress | None = None) -> tuple[list[str], Iterator[Chunk]]:
    size = os.path.getsize(path)
    handle = open(path, newline="", encoding="utf-8")  # noqa: SIM115 - closed by the generator
    reader = csv.reader(handle)
    try:
        header = next(reader)
    except StopIteration:
        handle.close()
        raise DataSourceError(f"{path}: empty CSV file") from None

    def chunks() -> Iterator[Chunk]:
        rows_done = 0
        with handle:
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
                columns = list(zip(*rows, strict=True))
                yield {name: column_values(list(col)) for name, col in zip(header, columns, strict=True)}
                if progress is not None:
                    progress(rows_done, _tell(handle) / size if size else None)

    return header, chunks()


def _tell(handle: io.TextIOWrapper) -> float:
    try:
        return float(os.lseek(handle.fileno(), 0, os.SEEK_CUR))
    except OSError:
        return 0.0


def read_numpy(path: Path, names: list[str] | None, progress: Progress | None = None
               ) -> tuple[list[str], Iterator[Chunk]]:
    """A 2-D ``.npy`` (memory-mapped, columns named by ``names`` or f0, f1, ...) or an ``.npz``
    of equally long 1-D arrays, one per column."""
    if path.suffix == ".npz":
        archive = np.load(path, allow_pickle=False)
        header = list(archive.files)
        lengths = {len(archive[k]) for k in header}
        if len(lengths) != 1:
            raise DataSourceError(f"{path}: arrays differ in length: {sorted(lengths)}")
        total = lengths.pop()

        def npz_chunks() -> Iterator[Chunk]:
            for start in range(0, total, CHUNK_ROWS):
                yield {k: _as_column(archive[k][start:start + CHUNK_ROWS]) for k in header}
                if progress is not None:
                    progress(min(start + CHUNK_ROWS, total), min(1.0, (start + CHUNK_ROWS) / total))

        return header, npz_chunks()
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    if array.ndim != 2:
        raise DataSourceError(f"{path}: want a 2-D array (rows x features), got shape {array.shape}")
    header = names or [f"f{i}" for i in range(array.shape[1])]
    if len(header) != array.shape[1]:
        raise DataSourceError(f"{path}: {array.shape[1]} columns but {len(header)} feature names")

    def npy_chunks() -> Iterator[Chunk]:
        total = array.shape[0]
        for start in range(0, total, CHUNK_ROWS):
            block = np.asarray(array[start:start + CHUNK_ROWS])
            yield {name: _as_column(block[:, i]) for i, name in enumerate(header)}
            if progress is not None:
                progress(min(start + CHUNK_ROWS, total), min(1.0, (start + CHUNK_ROWS) / total))

    return header, npy_chunks()


def _as_column(values: NDArray[Any]) -> NDArray[Any]:
    if values.dtype.kind in "iuf":
        return values.astype(np.float64)
    # Python values (bool, str, bytes, None, ...), spelled by category_key; one element per row
    # even when the rows are lists
    return np.fromiter(values.tolist(), dtype=object, count=len(values))


def read_parquet(path: Path, progress: Progress | None = None) -> tuple[list[str], Iterator[Chunk]]:
    try:
        import pyarrow.parquet as pq  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        raise DataSourceError("reading Parquet needs pyarrow: pip install 'modelmon[parquet]'") from None
    parquet = pq.ParquetFile(path)
    header = [str(n) for n in parquet.schema_arrow.names]
    total = parquet.metadata.num_rows

    def chunks() -> Iterator[Chunk]:
        done = 0
        for batch in parquet.iter_batches(batch_size=CHUNK_ROWS):
            out: Chunk = {}
            for name, column in zip(header, batch.columns, strict=True):
                values = column.to_numpy(zero_copy_only=False)
                out[name] = _as_column(np.asarray(values))
            done += batch.num_rows
            yield out
            if progress is not None:
                progress(done, done / total if total else None)

    return header, chunks()


def open_source(path: str | Path, names: list[str] | None = None, progress: Progress | None = None
                ) -> tuple[list[str], Iterator[Chunk]]:
    p = Path(path)
    if not p.exists():
        raise DataSourceError(f"{p}: no such file")
    suffix = p.suffix.lower()
    if suffix in (".csv", ".txt"):
        return read_csv(p, progress)
    if suffix in (".npy", ".npz"):
        return read_numpy(p, names, progress)
    if suffix in (".parquet", ".pq"):
        return read_parquet(p, progress)
    raise DataSourceError(f"{p}: unknown file type {suffix!r} (want .csv, .parquet, .npy or .npz)")
