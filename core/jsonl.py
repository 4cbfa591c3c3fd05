"""The one JSON-lines reader: corpora, image manifests and query files all go through it.

Its policy: blank lines are ignored; a bad line is either fatal (`on_error="fail"`, the
error names file and line) or skipped and reported with its line number (`"skip"`); with a
`key`, a later line with the same key replaces the earlier one and is counted as a duplicate.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mmsearch.errors import MmsearchError

ON_ERROR = ("skip", "fail")


class JsonLinesError(MmsearchError):
    """The file cannot be read, or (under on_error="fail") one of its lines is invalid."""


def _not_json(constant: str):
    raise ValueError(f"{constant} is not a JSON value (JSON numbers are finite)")


def parse_object(line: str | bytes) -> dict:
    """One line as a JSON object; the ValueError says what is wrong with it."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8 text (byte 0x{line[exc.start]:02x} at column {exc.start + 1})") from None
    try:
        record = json.loads(line, parse_constant=_not_json)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON ({exc.msg})") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    return record


@dataclass
class JsonLines:
    records: list[dict] = field(default_factory=list)
    lines: int = 0  # non-blank lines read
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)
    duplicates: int = 0  # lines replaced by a later one with the same key


def read_jsonl(path: str | Path, parse: Callable[[dict], dict] = lambda record: record, *, on_error: str = "fail",
               key: str | None = None) -> JsonLines:
    """Every valid record of `path`, `parse`d (it raises ValueError to reject a record).
    With `key`, the last line of each key wins and records keep the order of the winning lines."""
    out, by_key = JsonLines(), {}
    try:
        handle = open(path, "rb")  # noqa: SIM115 -- the with below closes it; lines decoded one by one
    except OSError as exc:
        raise JsonLinesError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            out.lines += 1
            try:
                record = parse(parse_object(line))
            except ValueError as exc:
                if on_error == "fail":
                    raise JsonLinesError(f"{path}:{number}: {exc}") from None
                out.skipped.append((number, str(exc)))
                continue
            if key is None:
                out.records.append(record)
                continue
            if record[key] in by_key:
                out.duplicates += 1
                del by_key[record[key]]  # re-inserted below, so the order follows the winning line
            by_key[record[key]] = record
    if key is not None:
        out.records = list(by_key.values())
    return out


def _query_record(record: dict) -> dict:
    if not isinstance(record.get("query"), str):
        raise ValueError("needs a string field 'query'")
    return record


def read_queries(path: str | Path) -> list[dict]:
    """A query file for `search --queries` and `eval`: {"query": ...[, "relevant": [ids]]} per line."""
    return read_jsonl(path, _query_record).records
