"""Read rows from jsonl / json / csv / parquet / `save_to_disk` folders / built-in generators.

Readers only parse. Every row comes back as a `Row` holding either a dict (`data`) or an
`error`; deciding whether a record is valid is `validate.py`'s job. A problem with one row never
raises, so one bad line cannot hide the rest of a file from the report; only file-level problems
(missing file, unknown format, unreadable parquet) raise.
"""

from __future__ import annotations

import csv
import errno
import gzip
import inspect
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from urllib.parse import parse_qsl

BUILTIN_PREFIX = "builtin:"
FORMATS = ("jsonl", "json", "csv", "parquet", "hf")
_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_GZIP_FORMATS = ("jsonl", "json", "csv")
# Spellings pandas and spreadsheet exports use for a missing cell; CSV cannot say "null" otherwise.
_CSV_NULLS = ("", "NaN", "nan")


@dataclass(frozen=True)
class Row:
    """One record as read. `data` is set for a parsed object; otherwise `error` says why not and
    `raw` keeps the text (when there is one) so the quarantine can show what was there.

    `line` is 1-based: the physical line in jsonl/csv (csv header = line 1), the element index+1
    in a json array, the row index+1 in parquet, dataset folders and built-in generators.
    """

    source: str
    line: int
    data: dict | None
    raw: str | None = None
    error: str | None = None


def type_name(value: object) -> str:
    """Name of a value's type for error messages ("int", "list", "null", ...)."""
    return "null" if value is None else type(value).__name__


def iter_rows(
    path: str,
    *,
    fmt: str | None = None,
    field_map: dict[str, str] | None = None,
    max_record_bytes: int | None = None,
) -> Iterator[Row]:
    """Stream the rows of one data source.

    `fmt` overrides the format guessed from the extension (`.gz` is decompressed transparently
    for jsonl, json and csv); a folder is read with `datasets.load_from_disk` (split 'train' of
    a DatasetDict). `builtin:NAME?n=500&seed=3` runs a registered generator. `field_map` maps
    canonical field -> source column, e.g. {"prompt": "question"}.

    `max_record_bytes` turns a larger record into an error row ("record too large"): a jsonl
    line is measured in bytes as read and never held whole (so a huge line costs no memory);
    a row of another format is measured as its UTF-8 JSON text.

    Raises FileNotFoundError / ValueError at call time (not at first `next`), so a bad path is
    reported before any work starts.
    """
    path = os.fspath(path)
    if path.startswith(BUILTIN_PREFIX):
        rows = _read_builtin(path)
    else:
        if not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        fmt = fmt or _detect_format(path)
        if fmt not in FORMATS:
            raise ValueError(f"{path}: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
        if fmt == "jsonl":  # lines are measured as read, before they are parsed
            rows = _read_jsonl(path, max_record_bytes)
            max_record_bytes = None
        else:
            rows = _READERS[fmt](path)
    if max_record_bytes is not None:
        rows = _size_limited(rows, max_record_bytes)
    return _renamed(rows, field_map) if field_map else rows


def _size_limited(rows: Iterable[Row], max_bytes: int) -> Iterator[Row]:
    for row in rows:
        if row.data is not None:
            text = json.dumps(row.data, ensure_ascii=False, default=str)
            size = len(text.encode("utf-8", "surrogatepass"))
            if size > max_bytes:
                preview = text[:_PREVIEW_BYTES] + "..."
                row = Row(
                    row.source,
                    row.line,
                    None,
                    raw=preview,
                    error=f"record too large: {size} bytes > max_record_bytes {max_bytes}",
                )
        yield row


def _detect_format(path: str) -> str:
    if os.path.isdir(path):
        return "hf"
    stem = path[:-3] if path.endswith(".gz") else path
    fmt = _EXTENSIONS.get(os.path.splitext(stem)[1].lower())
    if fmt is None or (stem != path and fmt not in _GZIP_FORMATS):
        raise ValueError(f"{path}: cannot tell the format from the name; pass fmt= one of {', '.join(FORMATS)}")
    return fmt


def _renamed(rows: Iterable[Row], field_map: dict[str, str]) -> Iterator[Row]:
    # Mapped canonical names are dropped from the source first, so a canonical field always
    # comes from the column the user named (and is "missing" if that column is absent) instead
    # of silently falling back to a same-named column. Values are read before any key is
    # removed, so swaps like {"prompt": "completion", "completion": "prompt"} work.
    columns = set(field_map.values())
    for row in rows:
        if row.data is None:
            yield row
            continue
        data = {k: v for k, v in row.data.items() if k not in columns and k not in field_map}
        for canonical, column in field_map.items():
            if column in row.data:
                data[canonical] = row.data[column]
        yield replace(row, data=data)


def _open_binary(path: str):
    # Binary, so each line's bytes can be decoded on their own: one bad byte spoils one row.
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _lossless_text(raw: bytes) -> str:
    """Bytes that are not UTF-8 as text that keeps every byte visible (\\xff)."""
    return raw.decode("utf-8", errors="backslashreplace").rstrip("\r\n")


def _utf8_error(exc: UnicodeDecodeError) -> str:
    return f"invalid UTF-8: byte 0x{exc.object[exc.start]:02x} at offset {exc.start}"


# A row's raw text kept in the quarantine when the row is too large to keep whole.
_PREVIEW_BYTES = 200
# Bytes read at a time while skipping the rest of an over-limit line.
_SKIP_CHUNK = 1 << 20


def _truncated_archive(path: str, number: int, rows: int) -> Row:
    """The row standing for everything after the last complete line of a cut `.gz` file."""
    return Row(
        path,
        number + 1,
        None,
        raw=None,
        error=f"truncated archive: {path} ends early after line {number} ({rows} rows read); the rest is lost",
    )


def _long_line(f, head: bytes, max_bytes: int) -> int:
    """Skip the rest of a line whose first `head` bytes are over the limit; returns its size
    without the line ending."""
    size = len(head)
    while head and not head.endswith(b"\n"):
        head = f.readline(_SKIP_CHUNK)
        size += len(head)
    return size - (len(head) - len(head.rstrip(b"\r\n")))


def _read_jsonl(path: str, max_record_bytes: int | None = None) -> Iterator[Row]:
    number = rows = 0
    with _open_binary(path) as f:
        while True:
            try:
                raw = f.readline(-1 if max_record_bytes is None else max_record_bytes + 2)  # + CRLF
                if max_record_bytes is not None and len(raw.rstrip(b"\r\n")) > max_record_bytes:
                    size = _long_line(f, raw, max_record_bytes)
                    number += 1
                    rows += 1
                    yield Row(
                        path,
                        number,
                        None,
                        raw=_lossless_text(raw[:_PREVIEW_BYTES]) + "...",
                        error=f"record too large: {size} bytes > max_record_bytes {max_record_bytes}",
                    )
                    continue
            except (EOFError, gzip.BadGzipFile):
                yield _truncated_archive(path, number, rows)
                return
            if not raw:
                return
            number += 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                rows += 1
                yield Row(path, number, None, raw=_lossless_text(raw), error=_utf8_error(exc))
                continue
            if number == 1:
                text = text.removeprefix("\ufeff")
            if not text.strip():
                continue
            rows += 1
            yield _object_row(path, number, text.rstrip("\r\n"))


# Deepest nesting of lists and objects accepted in a record. Real records nest 3-4 levels; a
# fixed limit well below Python's recursion limit means no later step (quarantine, dedup
# hashing) can recurse too deep, whatever the stack depth it runs at.
MAX_NESTING = 100
_TOO_DEEP = f"nested too deep: more than {MAX_NESTING} levels of lists / objects"


def _too_deep(value: object) -> bool:
    """Whether ``value`` nests lists / objects more than MAX_NESTING deep (no recursion)."""
    stack = [(value, 1)]
    while stack:  # each container is visited once
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > MAX_NESTING:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _object_row(path: str, number: int, text: str) -> Row:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return Row(path, number, None, raw=text, error=f"not valid JSON: {exc.msg} at column {exc.colno}")
    except RecursionError:
        return Row(path, number, None, raw=text[:_PREVIEW_BYTES], error=_TOO_DEEP)
    if _too_deep(value):
        return Row(path, number, None, raw=text[:_PREVIEW_BYTES], error=_TOO_DEEP)
    if not isinstance(value, dict):
        return Row(path, number, None, raw=text, error=f"expected a JSON object, got {type_name(value)}")
    return Row(path, number, value)


def _read_json(path: str) -> Iterator[Row]:
    # A JSON document cannot be parsed piecewise without a streaming parser; json files are
    # expected to be small (large data belongs in jsonl/parquet).
    with _open_binary(path) as f:
        try:
            blob = f.read()
        except (EOFError, gzip.BadGzipFile):
            yield _truncated_archive(path, 0, 0)
            return
    try:
        text = blob.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        number = blob.count(b"\n", 0, exc.start) + 1
        bad_line = blob.split(b"\n")[number - 1]
        yield Row(path, number, None, raw=_lossless_text(bad_line), error=_utf8_error(exc))
        return
    try:
        value = json.loads(text)
    except RecursionError:
        yield Row(path, 1, None, raw=text[:_PREVIEW_BYTES], error=_TOO_DEEP)
        return
    except json.JSONDecodeError as exc:
        bad_line = text.splitlines()[exc.lineno - 1] if text.strip() else text
        yield Row(
            path,
            exc.lineno,
            None,
            raw=bad_line,
            error=f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
        )
        return
    items = value.get("data") if isinstance(value, dict) else value
    if not isinstance(items, list):
        yield Row(
            path,
            1,
            None,
            raw=None,
            error=f"expected a JSON array of objects or an object with a list under 'data', got {type_name(value)}",
        )
        return
    for index, item in enumerate(items):
        if isinstance(item, dict) and _too_deep(item):
            yield Row(path, index + 1, None, raw=None, error=_TOO_DEEP)
        elif isinstance(item, dict):
            yield Row(path, index + 1, item)
        else:
            yield Row(
                path,
                index + 1,
                None,
                raw=json.dumps(item, ensure_ascii=False),
                error=f"expected a JSON object, got {type_name(item)}",
            )


def _read_csv(path: str) -> Iterator[Row]:
    with _open_binary(path) as f:
        consumed: list[bytes] = []  # physical lines of the row being parsed, for `raw`

        def lines() -> Iterator[str]:
            for raw in f:
                consumed.append(raw)
                # surrogateescape: undecodable bytes survive parsing; the row is rejected below.
                yield raw.decode("utf-8", errors="surrogateescape")

        reader = csv.reader(lines())
        header = next(reader, None)
        if header is None:
            return
        header[0] = header[0].removeprefix("\ufeff")
        end = reader.line_num
        while True:
            consumed.clear()
            try:
                cells = next(reader)
                error = None
            except StopIteration:
                return
            except (EOFError, gzip.BadGzipFile):
                yield _truncated_archive(path, end, end - 1)
                return
            except csv.Error as exc:
                cells, error = None, f"not valid CSV: {exc}"
            # A quoted cell may span lines: the row starts right after the previous one ended.
            start, end = end + 1, reader.line_num
            raw = b"".join(consumed)
            if cells == []:
                continue  # blank line
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                error = _utf8_error(exc)
            if error is None and len(cells) != len(header):
                error = f"row has {len(cells)} cells, header has {len(header)}"
            if error is not None:
                yield Row(path, start, None, raw=_lossless_text(raw), error=error)
                continue
            yield Row(path, start, {k: (None if v in _CSV_NULLS else v) for k, v in zip(header, cells)})


def _nan_to_none(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def _read_parquet(path: str) -> Iterator[Row]:
    import pyarrow.parquet as pq  # heavy; only when a parquet file is read

    number = 0
    with pq.ParquetFile(path) as parquet:
        for batch in parquet.iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                number += 1
                yield Row(path, number, _nan_to_none(record))


def _read_hf(path: str) -> Iterator[Row]:
    import datasets  # heavy; only when a dataset folder is read

    dataset = datasets.load_from_disk(path)
    if isinstance(dataset, datasets.DatasetDict):
        if "train" not in dataset:
            raise ValueError(f"{path}: DatasetDict has no 'train' split (has {', '.join(dataset)})")
        dataset = dataset["train"]
    for index, record in enumerate(dataset):
        yield Row(path, index + 1, _nan_to_none(record))


_READERS: dict[str, Callable[[str], Iterator[Row]]] = {
    "jsonl": _read_jsonl,
    "json": _read_json,
    "csv": _read_csv,
    "parquet": _read_parquet,
    "hf": _read_hf,
}

_BUILTINS: dict[str, Callable[..., Iterable[dict]]] = {}


def register_builtin(name: str, generator: Callable[..., Iterable[dict]]) -> None:
    """Make `builtin:NAME?key=value&...` read `generator(key=value, ...)` (integers parsed)."""
    _BUILTINS[name] = generator


def builtin_names() -> list[str]:
    _load_builtin_modules()
    return sorted(_BUILTINS)


def _load_builtin_modules() -> None:
    from preference_data import arithmetic, synthetic, synthetic_prefs  # noqa: F401  (they register on import)


def _read_builtin(path: str) -> Iterator[Row]:
    name, _, query = path[len(BUILTIN_PREFIX) :].partition("?")
    if name not in _BUILTINS:
        _load_builtin_modules()
    generator = _BUILTINS.get(name)
    if generator is None:
        raise ValueError(f"{path}: unknown built-in data set {name!r}; known: {', '.join(sorted(_BUILTINS))}")
    try:
        params = {
            k: int(v) if v.lstrip("-").isdigit() else v
            for k, v in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
        }
        inspect.signature(generator).bind(**params)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: bad parameters for built-in {name!r}: {exc}") from None
    records = generator(**params)
    return (Row(path, index + 1, dict(record)) for index, record in enumerate(records))
