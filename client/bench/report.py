"""Bench rows, their ratios to a baseline from the same run, and the markdown/JSON report."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass
class Row:
    part: str  # a..e
    system: str
    concurrency: int | None
    throughput: float
    unit: str
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    baseline: str = ""  # the row this one is compared with, e.g. "(a) batch 32"
    ratio: float | None = None  # throughput / baseline throughput
    p50_ratio: float | None = None  # p50 / baseline p50

    @property
    def label(self) -> str:
        at = f" c={self.concurrency}" if self.concurrency else ""
        return f"({self.part}) {self.system}{at}"

    def compare(self, baseline: Row) -> Row:
        self.baseline = baseline.label
        self.ratio = self.throughput / baseline.throughput
        if self.p50_ms and baseline.p50_ms:
            self.p50_ratio = self.p50_ms / baseline.p50_ms
        return self


def percentiles_ms(latencies_s: Sequence[float]) -> tuple[float, float, float]:
    p50, p95, p99 = np.percentile(np.asarray(latencies_s) * 1000, [50, 95, 99])
    return float(p50), float(p95), float(p99)


def machine_description() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.machine())
    return f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"


def _figure(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def markdown_table(rows: Sequence[Row]) -> str:
    lines = [
        "| run | throughput | p50 ms | p95 ms | p99 ms | compared with | throughput ratio | p50 ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.label} | {_figure(row.throughput)} {row.unit} | {_figure(row.p50_ms)} | {_figure(row.p95_ms)} | "
            f"{_figure(row.p99_ms)} | {row.baseline} | {_figure(row.ratio, 2)}{'×' if row.ratio else ''} | "
            f"{_figure(row.p50_ratio, 2)}{'×' if row.p50_ratio else ''} |"
        )
    return "\n".join(lines)


def find(rows: Sequence[Row], part: str, system_prefix: str, concurrency: int | None) -> Row | None:
    return next((r for r in rows if r.part == part and r.system.startswith(system_prefix)
                 and r.concurrency == concurrency), None)


def search_rows(rows: Sequence[Row], concurrency: int | None) -> dict[str, Row | None]:
    """At one concurrency: our search on each store, and the alternatives it is held to."""
    limit = max((r for r in rows if r.part == "a" and r.unit == "queries/s"), key=lambda r: r.throughput, default=None)
    return {"search": find(rows, "d", "Triton search (perf_analyzer)", concurrency),
            "server": find(rows, "d", "Triton search (perf_analyzer), milvus-server", concurrency),
            "naive": find(rows, "b", "", concurrency), "competent": find(rows, "f", "", concurrency), "limit": limit}


def ratio_of(a: Row | None, b: Row | None, p50: bool = False) -> float | None:
    if a is None or b is None:
        return None
    return (a.p50_ms / b.p50_ms if a.p50_ms and b.p50_ms else None) if p50 else a.throughput / b.throughput


def alternatives_table(rows: Sequence[Row]) -> str:
    """`search` against raw onnxruntime, the competent service (f) and the naive one (b), per concurrency."""
    levels = sorted({r.concurrency for r in rows if r.part == "d" and r.concurrency})
    lines = ["| c | search q/s | ÷ raw onnxruntime | ÷ (f) competent | ÷ (b) naive | p50 ms: search / (f) / (b) "
             "| p50 ms on milvus-server |", "|---|---|---|---|---|---|---|"]
    for level in levels:
        found = search_rows(rows, level)
        search, competent, naive, server = found["search"], found["competent"], found["naive"], found["server"]
        if search is None:
            continue
        cells = [_figure(ratio_of(search, found[name]), 2) for name in ("limit", "competent", "naive")]
        p50s = " / ".join(_figure(r.p50_ms) if r else "" for r in (search, competent, naive))
        lines.append(f"| {level} | {_figure(search.throughput)} | " + " | ".join(f"{x}×" if x else "" for x in cells)
                     + f" | {p50s} | {_figure(server.p50_ms) if server else ''} |")
    return "\n".join(lines)


def goals(rows: Sequence[Row], top: int) -> list[str]:
    """The targets set for the bench, each with the measured figure and whether it was met."""
    at_top, levels = search_rows(rows, top), sorted({r.concurrency for r in rows if r.part == "d" and r.concurrency})
    at_low = search_rows(rows, levels[0]) if levels else {}
    index = next((r for r in rows if r.part == "e"), None)
    checks = [
        (f"(c) vs (a) throughput at c={top}",
         ratio_of(find(rows, "c", "Triton text_embed (perf", top), at_top["limit"]), "≥", 0.8, "×"),
        (f"(d) vs (a) throughput at c={top}", ratio_of(at_top["search"], at_top["limit"]), "≥", 0.6, "×"),
        (f"(d) p50 at c={top}", at_top["search"].p50_ms if at_top["search"] else None, "<", 60, " ms"),
        (f"(d) vs (f) throughput at c={top}", ratio_of(at_top["search"], at_top["competent"]), "≥", 1.0, "×"),
        (f"(d) vs (b) throughput at c={top}", ratio_of(at_top["search"], at_top["naive"]), "≥", 3.0, "×"),
        (f"(d) vs (b) p50 at c={top}", ratio_of(at_top["search"], at_top["naive"], p50=True), "≤", 0.5, "×"),
        (f"(d) milvus-server vs Milvus Lite p50 at c={levels[0] if levels else ''}",
         ratio_of(at_low.get("server"), at_low.get("search"), p50=True), "≤", 2.0, "×"),
        ("(e) vs (a) docs/s", index.ratio if index else None, "≥", 0.8, "×"),
    ]
    lines = []
    for name, value, sense, target, unit in checks:
        if value is not None:
            met = {"≥": value >= target, "≤": value <= target, "<": value < target}[sense]
            lines.append(f"- {name}: {value:.2f}{unit} (goal {sense} {target}{unit}): {'met' if met else 'missed'}")
    off = next((r for r in rows if r.system.endswith("dynamic batching off")), None)
    if off:
        lines.append(f"- dynamic batching off vs on, text_embed at c={off.concurrency}: "
                     f"throughput {off.ratio:.2f}×, p50 {off.p50_ratio:.2f}×")
    return lines


def write_report(rows: Sequence[Row], out_dir: Path, command: str, top: int, extra: dict | None = None,
                 name: str = "bench", section: str = "") -> tuple[Path, Path]:
    """<name>.md (table, comparisons, goals, `section`, how it was made) and <name>.json (the
    rows and `extra` as data)."""
    machine = machine_description()
    out_dir.mkdir(parents=True, exist_ok=True)
    compared = f"{alternatives_table(rows)}\n\n" if any(r.part == "d" for r in rows) else ""
    parts = [machine, markdown_table(rows), compared + "\n".join(goals(rows, top)), section, f"Made by `{command}`."]
    text = "\n\n".join(part for part in parts if part.strip()) + "\n"
    markdown = out_dir / f"{name}.md"
    markdown.write_text(text)
    data = out_dir / f"{name}.json"
    rows_json = [asdict(r) | {"label": r.label} for r in rows]
    data.write_text(
        json.dumps({"machine": machine, "command": command, "rows": rows_json, **(extra or {})}, indent=2) + "\n"
    )
    return markdown, data
