"""Reading and writing record files: JSONL, Parquet and `datasets` directories."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from alignkit.data.formats import validate
from alignkit.errors import DataError


def write_jsonl(path: str | Path, records: Iterable[dict]) -> Path:
    """Write one JSON object per line, atomically (a temp file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------- reading

SUPPORTED = (
    ".jsonl, .json (a list of records), .parquet, a directory saved with datasets' save_to_disk, "
    "or a directory of .jsonl/.parquet files"
)


def load_records(path: str | Path, kind: str, *, limit: int | None = None, allow_empty: bool = False) -> list[dict]:
    """Read a file or directory of records and validate each against `kind` (see formats.KINDS).

    Stops after `limit` records. Every problem is a one-line `DataError` naming the file and line/row; so is
    a source without records, unless `allow_empty`.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: does not exist")
    records: list[dict] = []
    for where, record in _iter_source(path):
        records.append(validate(kind, record, where))
        if limit is not None and len(records) >= limit:
            break
    if not records and not allow_empty:
        raise DataError(f"{path}: no records")
    return records


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield (line_no, obj) for every non-blank line of a JSON Lines file; line numbers start at 1."""
    path = Path(path)
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{line_no}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{line_no}: invalid JSON ({e.msg} at column {e.colno})") from None


def _iter_source(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, raw record) pairs from any supported source; `where` is what error messages print."""
    if path.is_dir():
        yield from _iter_dir(path)
        return
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        for line_no, obj in iter_jsonl(path):
            yield f"{path}:{line_no}", obj
    elif suffix == ".json":
        yield from _iter_json(path)
    elif suffix == ".parquet":
        yield from _iter_parquet(path)
    else:
        raise DataError(f"{path}: unsupported file type '{path.suffix}' (supported: {SUPPORTED})")


def _iter_json(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        # Many datasets ship JSON Lines under a .json name; read those line by line.
        if e.msg == "Extra data":
            for line_no, obj in iter_jsonl(path):
                yield f"{path}:{line_no}", obj
            return
        raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(data, list):
        kind = "an object" if isinstance(data, dict) else type(data).__name__
        raise DataError(f"{path}: expected a JSON list of records, got {kind}")
    for i, obj in enumerate(data, start=1):
        yield f"{path}:item {i}", obj


def _iter_parquet(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a damaged or non-parquet file
        raise DataError(f"{path}: cannot read as parquet ({_one_line(e)})") from None
    row = 0
    # Batches keep a `limit` read cheap on a large file.
    for batch in file.iter_batches(batch_size=4096):
        for obj in batch.to_pylist():
            row += 1
            yield f"{path}:row {row}", _drop_nulls(obj)


def _iter_dir(path: Path) -> Iterator[tuple[str, Any]]:
    if (path / "state.json").exists() or (path / "dataset_dict.json").exists():
        yield from _iter_saved_dataset(path)
        return
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and p.suffix.lower() in (".jsonl", ".parquet")
        and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
    )
    if not files:
        raise DataError(f"{path}: directory holds no .jsonl or .parquet files (supported: {SUPPORTED})")
    for file in files:
        yield from _iter_source(file)


def _iter_saved_dataset(path: Path) -> Iterator[tuple[str, Any]]:
    """A `datasets` save_to_disk directory: a Dataset, or a DatasetDict (its "train" split or its only one)."""
    from datasets import DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(path))
    except Exception as e:  # datasets raises several types for a damaged directory
        raise DataError(f"{path}: cannot load with datasets.load_from_disk ({_one_line(e)})") from None
    where = str(path)
    if isinstance(ds, DatasetDict):
        splits = list(ds)
        if "train" in ds:
            split = "train"
        elif len(splits) == 1:
            split = splits[0]
        else:
            raise DataError(
                f"{path}: a DatasetDict with splits {', '.join(splits)} and no 'train' "
                f"(point data= at one split, e.g. {path / splits[0]})"
            )
        ds, where = ds[split], str(path / split)
    # Arrow batches: converting 4096 rows at a time is much faster than row-by-row indexing.
    row = 0
    for batch in ds.with_format("arrow").iter(batch_size=4096):
        for obj in batch.to_pylist():
            row += 1
            yield f"{where}:row {row}", _drop_nulls(obj)


def _drop_nulls(row: dict) -> dict:
    # A columnar row has every column; null marks a field this record does not have (e.g. `margin`).
    return {k: v for k, v in row.items() if v is not None}


def _one_line(e: Exception) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."
