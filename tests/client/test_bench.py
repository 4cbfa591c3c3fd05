"""`mmsearch bench`: the report logic without a server, and one short real run (perf_analyzer,
the naive service and Triton) checked for completeness, never for speed."""

import json

import pytest

from mmsearch.client.bench.report import Row, goals, markdown_table, percentiles_ms
from mmsearch.client.bench.run import without_dynamic_batching


def test_ratios_are_taken_against_the_named_baseline():
    naive = Row("b", "naive", 16, 10.0, "queries/s", 100.0, 150.0, 200.0)
    ours = Row("d", "Triton search (perf_analyzer)", 16, 35.0, "queries/s", 40.0, 60.0, 80.0).compare(naive)
    assert (ours.baseline, ours.ratio, ours.p50_ratio) == ("(b) naive c=16", 3.5, 0.4)
    table = markdown_table([naive, ours])
    assert (
        "| (d) Triton search (perf_analyzer) c=16 | 35.0 queries/s | 40.0 | 60.0 | 80.0 | (b) naive c=16 "
        "| 3.50× | 0.40× |"
        in table
    )
    assert goals([naive, ours], 16) == [
        "- (d) vs (b) throughput at c=16: 3.50× (goal ≥ 3.0×): met",
        "- (d) vs (b) p50 at c=16: 0.40× (goal ≤ 0.5×): met",
    ]
    slow = Row("d", "Triton search (perf_analyzer)", 16, 20.0, "queries/s", 60.0).compare(naive)
    assert goals([naive, slow], 16)[0] == "- (d) vs (b) throughput at c=16: 2.00× (goal ≥ 3.0×): missed"


def test_percentiles_are_in_milliseconds():
    assert percentiles_ms([0.001] * 98 + [0.1, 0.2]) == pytest.approx((1.0, 1.0, 101.0), rel=0.01)


def test_the_no_batching_copy_drops_dynamic_batching_and_keeps_the_rest(tmp_path):
    source = tmp_path / "repo"
    (source / "text_encoder").mkdir(parents=True)
    (source / "text_encoder" / "config.pbtxt").write_text(
        'name: "text_encoder"\nmax_batch_size: 64\n'
        "dynamic_batching { preferred_batch_size: 8 max_queue_delay_microseconds: 1000 }\n"
    )
    copy = without_dynamic_batching(source, tmp_path / "copy", ["text_encoder"])
    text = (copy / "text_encoder" / "config.pbtxt").read_text()
    assert "dynamic_batching" not in text and "max_batch_size: 64" in text
    assert "dynamic_batching" in (source / "text_encoder" / "config.pbtxt").read_text()


@pytest.mark.integration
def test_a_short_bench_run_measures_every_part_and_writes_both_reports(exported_repository, tmp_path, cli):
    out = tmp_path / "out"
    result = cli("bench", "--repository", str(exported_repository), "--seconds", "1", "--concurrency", "1,2",
                 "--out", str(out), timeout=900)
    report = json.loads((out / "bench.json").read_text())
    labels = [row["label"] for row in report["rows"]]
    for part, levels in {"b": (1, 2), "c": (1, 2), "d": (1, 2)}.items():
        assert (
            sum(label.startswith(f"({part}) ") and label.endswith(tuple(f"c={c}" for c in levels)) for label in labels)
            >= 2
        )
    assert any(label.startswith("(a) ") for label in labels) and any(label.startswith("(e) ") for label in labels)
    assert all(row["throughput"] > 0 for row in report["rows"])
    rows = {row["label"]: row for row in report["rows"]}
    search = rows["(d) Triton search (perf_analyzer) c=2"]
    naive = rows[search["baseline"]]
    assert naive["part"] == "b" and search["ratio"] == pytest.approx(search["throughput"] / naive["throughput"])
    assert (
        rows["(c) Triton text_embed, dynamic batching off c=2"]["baseline"]
        == "(c) Triton text_embed (perf_analyzer) c=2"
    )
    markdown = (out / "bench.md").read_text()
    assert "- (d) vs (b) throughput at c=2: " in markdown and "- (e) vs (a) docs/s: " in markdown
    assert markdown in result.stdout


@pytest.mark.integration
def test_a_small_scale_run_reports_latency_memory_and_the_vector_count(exported_repository, tmp_path, cli):
    out = tmp_path / "out"
    cli(
        "bench", "--repository", str(exported_repository), "--scale", "20000", "--store", "lite", "--index-type",
        "FLAT", "--seconds", "1", "--concurrency", "1", "--out", str(out), timeout=900,
    )
    report = json.loads((out / "bench-scale.json").read_text())
    # the run checks the count it inserted
    assert (report["vectors"], report["dim"], report["store"]) == (20000, 384, "lite")
    assert report["store_rss_mib"] > 0 and report["triton_rss_mib"] > 0
    labels = [row["label"] for row in report["rows"]]
    assert labels == [
        f"(scale) search top-10, 20,000 × 384 in Milvus Lite (FLAT), {level} c=1" for level in ("Strong", "Bounded")
    ]
    assert all(0 < row["p50_ms"] <= row["p99_ms"] for row in report["rows"])
