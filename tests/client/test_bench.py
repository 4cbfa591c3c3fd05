"""`mmsearch bench`: the report logic without a server, and one short real run (perf_analyzer,
the naive service and Triton) checked for completeness, never for speed."""

import json

import pytest

from mmsearch.client.bench.report import Row, alternatives_table, goals, markdown_table, percentiles_ms
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
        "- (d) p50 at c=16: 40.00 ms (goal < 60 ms): met",
        "- (d) vs (b) throughput at c=16: 3.50× (goal ≥ 3.0×): met",
        "- (d) vs (b) p50 at c=16: 0.40× (goal ≤ 0.5×): met",
    ]
    slow = Row("d", "Triton search (perf_analyzer)", 16, 20.0, "queries/s", 60.0).compare(naive)
    assert goals([naive, slow], 16)[1] == "- (d) vs (b) throughput at c=16: 2.00× (goal ≥ 3.0×): missed"


def test_search_is_held_to_raw_onnxruntime_the_competent_service_and_itself_on_a_server():
    rows = [Row("a", "onnxruntime, batch 1", None, 200.0, "queries/s"), Row("a", "docs", None, 50.0, "docs/s"),
            Row("f", "competent", 1, 40.0, "queries/s", 20.0), Row("f", "competent", 16, 100.0, "queries/s", 150.0),
            Row("d", "Triton search (perf_analyzer)", 1, 60.0, "queries/s", 15.0),
            Row("d", "Triton search (perf_analyzer)", 16, 130.0, "queries/s", 110.0),
            Row("d", "Triton search (perf_analyzer), milvus-server store", 1, 30.0, "queries/s", 33.0)]
    assert goals(rows, 16) == [
        "- (d) vs (a) throughput at c=16: 0.65× (goal ≥ 0.6×): met",  # against the best raw queries/s, not docs/s
        "- (d) p50 at c=16: 110.00 ms (goal < 60 ms): missed",
        "- (d) vs (f) throughput at c=16: 1.30× (goal ≥ 1.0×): met",
        "- (d) milvus-server vs Milvus Lite p50 at c=1: 2.20× (goal ≤ 2.0×): missed",
    ]
    table = alternatives_table(rows).splitlines()
    assert table[2] == "| 1 | 60.0 | 0.30× | 1.50× |  | 15.0 / 20.0 /  | 33.0 |"
    assert table[3] == "| 16 | 130.0 | 0.65× | 1.30× |  | 110.0 / 150.0 /  |  |"


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
def test_a_short_bench_run_measures_every_part_and_writes_both_reports(exported_repository, milvus_server, tmp_path,
                                                                       cli):
    out = tmp_path / "out"
    result = cli("bench", "--repository", str(exported_repository), "--seconds", "1", "--concurrency", "1,2",
                 "--out", str(out), "--milvus-server", milvus_server.uri, timeout=900)
    report = json.loads((out / "bench.json").read_text())
    labels = [row["label"] for row in report["rows"]]
    for part, levels in {"b": (1, 2), "c": (1, 2), "d": (1, 2), "f": (1, 2)}.items():
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
    server = rows["(d) Triton search (perf_analyzer), milvus-server store c=1"]
    assert server["baseline"] == "(d) Triton search (perf_analyzer) c=1"
    markdown = (out / "bench.md").read_text()
    for goal in ("(d) vs (a) throughput at c=2", "(d) vs (f) throughput at c=2", "(d) vs (b) throughput at c=2",
                 "(d) milvus-server vs Milvus Lite p50 at c=1", "(e) vs (a) docs/s"):
        assert f"- {goal}: " in markdown
    assert markdown in result.stdout


@pytest.mark.integration
def test_a_small_scale_run_reports_recall_latency_memory_and_the_vector_count(exported_repository, tmp_path, cli):
    out = tmp_path / "out"
    cli("bench", "--repository", str(exported_repository), "--scale", "20000", "--store", "lite", "--index-type",
        "FLAT", "--seconds", "1", "--concurrency", "1", "--out", str(out), timeout=900)
    report = json.loads((out / "bench-scale.json").read_text())
    # the run checks the count it inserted
    assert (report["vectors"], report["dim"], report["store"]) == (20000, 384, "lite")
    assert report["insert_rate"] > 0 and report["build_s"]["FLAT"] > 0
    (flat,) = report["recall"]
    assert flat["setting"] == "exact" and flat["recall@10"] >= 0.99  # FLAT is exact: the numpy truth agrees
    assert report["chosen"] == {"FLAT": "flat"} and report["match_ms"]["flat"]["1"]["p99"] > 0
    assert report["rss_mib"]["tritonserver"] > 0 and report["rss_mib"]["lite store"] > 0
    assert any(role.startswith("python stub: search") for role in report["rss_mib"])
    labels = [row["label"] for row in report["rows"]]
    assert labels == ["(scale) search top-10, 20,000 × 384 in Milvus Lite (FLAT), flat c=1"]
    assert all(0 < row["p50_ms"] <= row["p99_ms"] for row in report["rows"])
    assert "| FLAT | exact |" in (out / "bench-scale.md").read_text()


def test_histogram_quantiles_interpolate_within_a_bucket():
    from collections import Counter

    from mmsearch.client.bench.triton_stats import quantile

    histogram = Counter({"le=1": 10, "le=2": 50, "le=5": 99, "le=10": 100, "le=+Inf": 100, "count": 100})
    assert quantile(histogram, 0.5) == 2.0 and quantile(histogram, 0.99) == 5.0
    assert quantile(histogram, 0.995) == pytest.approx(7.5)
    assert quantile(Counter(), 0.5) is None


def test_py_spy_stacks_become_inclusive_and_self_shares():
    from mmsearch.client.bench.profile import top_functions

    stacks = ["main (/x/app.py:1);search (/x/store.py:9);decode (/x/json.py:3) 3",
              "main (/x/app.py:1);embed (e.py:2) 1"]
    functions, samples = top_functions(stacks)
    assert samples == 4 and functions[0] == ("main (app.py:1)", 100.0, 0.0)
    assert {name: (inclusive, own) for name, inclusive, own in functions[1:]} == {
        "search (store.py:9)": (75.0, 0.0), "decode (json.py:3)": (75.0, 75.0), "embed (e.py:2)": (25.0, 25.0)}


@pytest.mark.integration
def test_a_short_profile_accounts_for_every_process_of_a_search(exported_repository, tmp_path, cli):
    out = tmp_path / "out"
    result = cli("bench", "--repository", str(exported_repository), "--profile", "--seconds", "1",
                 "--concurrency", "2", "--out", str(out), timeout=600)
    profile = json.loads((out / "profile.json").read_text())
    assert profile["searches"] > 0 and profile["concurrency"] == 2
    for role in ("tritonserver", "python stub: search", "python stub: text_encoder", "Milvus Lite server",
                 "perf_analyzer (the client)"):
        assert profile["cpu_ms"][role] > 0, role
    assert profile["models"]["search"]["requests_per_search"] == 1.0
    assert profile["models"]["text_embed"]["requests_per_search"] == pytest.approx(1.0, abs=0.05)
    samples, functions = profile["sampled"]["the `search` stubs"]
    assert samples > 0 and any("Searcher.search_many" in f[0] for f in functions)
    assert "| **total** |" in (out / "profile.md").read_text() and "profile.md" in result.stdout
