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


def goals(rows: Sequence[Row], top: int) -> list[str]:
    """The issue's targets, each with the measured ratio and whether it was met."""

    def ratio(label: str, p50: bool = False) -> float | None:
        row = next((r for r in rows if r.label == label), None)
        return None if row is None else (row.p50_ratio if p50 else row.ratio)

    index = next((r for r in rows if r.part == "e"), None)
    checks = [
        (f"(c) vs (a) throughput at c={top}", ratio(f"(c) Triton text_embed (perf_analyzer) c={top}"), "≥", 0.8),
        (f"(d) vs (b) throughput at c={top}", ratio(f"(d) Triton search (perf_analyzer) c={top}"), "≥", 3.0),
        (f"(d) vs (b) p50 at c={top}", ratio(f"(d) Triton search (perf_analyzer) c={top}", p50=True), "≤", 0.5),
        ("(e) vs (a) docs/s", index.ratio if index else None, "≥", 0.8),
    ]
    lines = []
    for name, value, sense, target in checks:
        if value is not None:
            met = value >= target if sense == "≥" else value <= target
            lines.append(f"- {name}: {value:.2f}× (goal {sense} {target}×): {'met' if met else 'missed'}")
    off = next((r for r in rows if r.system.endswith("dynamic batching off")), None)
    if off:
        lines.append(f"- dynamic batching off vs on, text_embed at c={off.concurrency}: "
                     f"throughput {off.ratio:.2f}×, p50 {off.p50_ratio:.2f}×")
    return lines


def write_report(rows: Sequence[Row], out_dir: Path, command: str, top: int, extra: dict | None = None,
                 name: str = "bench") -> tuple[Path, Path]:
    """bench.md (table, goals, how it was made) and bench.json (the same rows as data)."""
    machine = machine_description()
    out_dir.mkdir(parents=True, exist_ok=True)
    notes = goals(rows, top) + [f"- {key}: {value}" for key, value in (extra or {}).items()]
    text = f"{machine}\n\n{markdown_table(rows)}\n\n" + "\n".join(notes) + f"\n\nMade by `{command}`.\n"
    markdown = out_dir / f"{name}.md"
    markdown.write_text(text)
    data = out_dir / f"{name}.json"
    rows_json = [asdict(r) | {"label": r.label} for r in rows]
    data.write_text(
        json.dumps({"machine": machine, "command": command, "rows": rows_json, **(extra or {})}, indent=2) + "\n"
    )
    return markdown, data
