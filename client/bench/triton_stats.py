"""What Triton reports about itself: the statistics extension and the metrics endpoint."""

from __future__ import annotations

import json
import urllib.request
from collections import Counter

STAGES = ("queue", "compute_input", "compute_infer", "compute_output")
STAGE_HISTOGRAM = "mmsearch_stage_latency_ms"  # the `search` model's own per-stage histogram


def model_stats(http_port: int) -> dict[str, dict]:
    """/v2/models/stats: per model, requests, executions and the ns spent in each stage."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/models/stats", timeout=10) as response:
        stats = json.loads(response.read())["model_stats"]
    return {
        s["name"]: {"requests": s["inference_count"], "executions": s["execution_count"],
                    **{stage: s["inference_stats"][stage]["ns"] for stage in STAGES}}
        for s in stats
    }


def stage_histograms(metrics_port: int) -> dict[str, Counter]:
    """stage -> {"le=<bound>": cumulative count, "sum": ms, "count": n}, summed over scenes."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    found: dict[str, Counter] = {}
    for line in text.splitlines():
        if not line.startswith(STAGE_HISTOGRAM + "_"):
            continue
        series, _, value = line.rpartition(" ")
        stage = label(series, "stage")
        kind = series[len(STAGE_HISTOGRAM) + 1:].split("{", 1)[0]
        key = "le=" + label(series, "le") if kind == "bucket" else kind
        found.setdefault(stage, Counter())[key] += float(value)
    return found


def label(series: str, name: str) -> str:
    """A label's value in a Prometheus series such as `m_bucket{stage="match",le="10"}`."""
    return series.split(f'{name}="', 1)[1].split('"', 1)[0]


def histogram_delta(before: dict[str, Counter], after: dict[str, Counter]) -> dict[str, Counter]:
    return {stage: counts - before.get(stage, Counter()) for stage, counts in after.items()}


def quantile(histogram: Counter, q: float) -> float | None:
    """The q-quantile from cumulative buckets, interpolated within its bucket (as Prometheus'
    histogram_quantile does); None without observations."""
    bounds = sorted((float(key[3:]), count) for key, count in histogram.items() if key.startswith("le="))
    total = histogram.get("count", 0)
    if not total or not bounds:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for bound, cumulative in bounds:
        if cumulative >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(cumulative - below, 1e-12)
        lower, below = bound, cumulative
    return lower
