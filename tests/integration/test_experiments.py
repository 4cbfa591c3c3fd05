"""Retrieval layers and A/B experiments on a real server: traffic split, hot reload,
concurrency, filters, metrics and `mmsearch eval` per arm, over the Debian FAQ."""

from __future__ import annotations

import json
import random
import re
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from mmsearch.client.search_client import ClientError, SearchClient
from mmsearch.indexer.datasets import chatterbot_english, debian_faq, write_jsonl
from mmsearch.model_repository.search.experiments import parse_config
from mmsearch.settings import StoreSettings

pytestmark = pytest.mark.integration

RANK_ARMS = """        - {name: truncate, ratio: 0.4}
        - {name: mmr, ratio: 0.3, params: {lambda: 0.7}}
        - {name: hybrid, ratio: 0.2}
        - {name: hybrid_rrf, ratio: 0.1, params: {ranker: hybrid, fusion: rrf, rrf_k: 60, lexical_weight: 1.0}}
"""
CONFIG = """
salt: integration
scenes:
  faq:
    collection: debian_faq
    layers:
      match:
        - {name: baseline, ratio: 0.5, params: {depth: 30}}
        - {name: deep, ratio: 0.5, params: {depth: 100}}
      rank:
""" + RANK_ARMS + """  bot:
    collection: chatterbot
    layers:
      rank:
        - {name: truncate, ratio: 0.5}
        - {name: mmr, ratio: 0.5, params: {lambda: 0.5}}
      summary:
        - {name: baseline, ratio: 0.5}
        - {name: short, ratio: 0.5, params: {fields: [question]}}
"""


@pytest.fixture(scope="module")
def faq():
    return debian_faq()


@pytest.fixture(scope="module")
def served(tmp_path_factory, exported_repository, start_triton, faq, cli):
    base = tmp_path_factory.mktemp("experiments")
    config = base / "search.yaml"
    config.write_text(CONFIG)
    settings = StoreSettings.resolve(base / "data")
    server = start_triton(exported_repository, settings, experiments=config)
    url = f"localhost:{server.ports.grpc}"
    write_jsonl(faq.documents, base / "faq.jsonl")
    write_jsonl(chatterbot_english()[:300], base / "bot.jsonl")
    cli(
        "index", "--input", str(base / "faq.jsonl"), "--collection", "debian_faq", "--text-field", "answer", "--url",
        url, "--data-dir", str(settings.data_dir),
    )
    cli(
        "index", "--input", str(base / "bot.jsonl"), "--collection", "chatterbot", "--text-field", "question", "--url",
        url, "--data-dir", str(settings.data_dir),
    )
    return {"server": server, "url": url, "config": config, "settings": settings, "base": base}


def arms_of(client, users, collection="debian_faq"):
    def arms(user):
        return client.search("upgrade", collection, 1, user_id=user)["experiments"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(users, pool.map(arms, users), strict=True))


def test_10000_users_split_by_the_configured_ratios_and_keep_their_arms_across_a_restart(served):
    config = parse_config(CONFIG)
    scene = config.scene_for("debian_faq")
    users = [f"user-{i}" for i in range(10_000)]
    client = SearchClient(served["url"])
    observed = arms_of(client, users)
    for layer in ("match", "rank"):
        counts = Counter(arms[layer] for arms in observed.values())
        for arm in scene.layers[layer]:
            share = counts[arm.name] / len(users)
            print(f"{layer}={arm.name}: {share:.4f} (configured {arm.ratio})")
            assert abs(share - arm.ratio) <= 0.02
    assert arms_of(client, users[:500]) == {u: observed[u] for u in users[:500]}  # stable across calls
    server = served["server"]
    server.stop()
    server.start()
    assert arms_of(SearchClient(served["url"]), users[:1000]) == {u: observed[u] for u in users[:1000]}


def test_forced_arms_and_filters(served, faq):
    client = SearchClient(served["url"])
    result = client.search(
        "install packages", "debian_faq", 5, params={"experiments": {"rank": "hybrid", "match": "deep"}}
    )
    assert result["experiments"]["rank"] == "hybrid" and result["experiments"]["match"] == "deep"
    chapter = faq.documents[0]["chapter"]
    filtered = client.search(
        "install packages", "debian_faq", 10, params={"filter": f"chapter == {json.dumps(chapter)}"}
    )
    assert filtered["hits"] and all(hit["document"]["chapter"] == chapter for hit in filtered["hits"])
    for bad, message in [("chapter = 'x'", "invalid filter: unexpected character '='"),
                         ("nonexistent == 1", "invalid filter: unknown field 'nonexistent'"),
                         ('chapter == "a" or 1 == 1', "invalid filter: expected a field name but found '1'")]:
        with pytest.raises(ClientError, match=message):
            client.search("install", "debian_faq", 5, params={"filter": bad})
    with pytest.raises(ClientError, match="no arm 'nope' in layer 'rank'"):
        client.search("install", "debian_faq", 5, params={"experiments": {"rank": "nope"}})
    short = client.search("hello", "chatterbot", 3, params={"experiments": {"summary": "short"}})
    assert all(set(hit["document"]) == {"id", "question"} for hit in short["hits"])


def test_mixed_concurrent_requests_match_the_same_requests_made_alone(served, faq):
    rng = random.Random(7)
    queries = [q["query"] for q in faq.queries[:12]] + ["tell me a joke", "what is AI"]
    requests = []
    for _ in range(40):
        collection = rng.choice(["debian_faq", "chatterbot"])
        forced = rng.choice([None, "mmr", "truncate"] + (["hybrid"] if collection == "debian_faq" else []))
        requests.append((rng.choice(queries), collection, rng.choice([3, 5, 10]), f"user-{rng.randrange(50)}", forced))
    client = SearchClient(served["url"])

    def run(request):
        query, collection, top_k, user, forced = request
        result = client.search(
            query, collection, top_k, user_id=user, params={"experiments": {"rank": forced}} if forced else None
        )
        return result["hits"], result["experiments"]

    alone = {request: run(request) for request in requests}
    workload = [rng.choice(requests) for _ in range(8 * 200)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(run, workload))
    def same(a, b):
        # Dynamic batching pads a query with others, so scores may move in the last float bits.
        (hits_a, arms_a), (hits_b, arms_b) = a, b
        return (
            arms_a == arms_b
            and [h["id"] for h in hits_a] == [h["id"] for h in hits_b]
            and all(
                abs(x["score"] - y["score"]) <= 1e-4 and x["document"] == y["document"]
                for x, y in zip(hits_a, hits_b, strict=True)
            )
        )

    mismatches = [
        (request, result, alone[request])
        for request, result in zip(workload, together, strict=True)
        if not same(result, alone[request])
    ]
    for request, got, want in mismatches[:3]:
        print(
            "MISMATCH", request, [(h["id"], h["score"]) for h in got[0]], got[1],
            [(h["id"], h["score"]) for h in want[0]], want[1],
        )
    assert not mismatches, (
        f"{len(mismatches)} of {len(workload)} concurrent responses differ from the same request alone"
    )


def metrics_text(served) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{served['server'].ports.metrics}/metrics", timeout=10) as response:
        return response.read().decode()


def test_metrics_show_stage_histograms_and_arm_counters(served):
    client = SearchClient(served["url"])
    for i in range(5):
        client.search("upgrade", "debian_faq", 5, user_id=f"m{i}", params={"experiments": {"rank": "mmr"}})
    text = metrics_text(served)
    for stage in ("embed", "match", "rank", "summary", "total"):
        assert re.search(rf'mmsearch_stage_latency_ms_bucket\{{[^}}]*stage="{stage}"', text), stage
    counts = re.findall(r'mmsearch_arm_requests_total\{([^}]*)\} (\d+)', text)
    mmr = [
        int(n) for labels, n in counts if 'arm="mmr"' in labels and 'layer="rank"' in labels and 'scene="faq"' in labels
    ]
    assert sum(mmr) >= 5


def test_config_edits_apply_while_serving_and_broken_edits_are_rejected(served):
    client = SearchClient(served["url"])
    failures, seen, stop = [], [], threading.Event()

    def loop():
        while not stop.is_set() and len(seen) < 5000:
            try:
                seen.append(
                    (time.monotonic(), client.search("upgrade", "debian_faq", 3, user_id="loop")["experiments"]["rank"])
                )
            except ClientError as exc:
                failures.append(str(exc))

    worker = threading.Thread(target=loop)
    worker.start()
    try:
        time.sleep(1)
        # every user of the faq scene moves to a new rank arm
        served["config"].write_text(
            CONFIG.replace(RANK_ARMS, "        - {name: fresh, ratio: 1.0, params: {ranker: hybrid}}\n")
        )
        changed_at = time.monotonic()
        deadline = changed_at + 10
        while time.monotonic() < deadline and not any(t > changed_at and arm.startswith("fresh") for t, arm in seen):
            time.sleep(0.1)
        applied = next(t for t, arm in seen if t > changed_at and arm.startswith("fresh")) - changed_at
        assert applied <= 5, f"new arm appeared after {applied:.1f} s"
        print(f"\nconfig edit applied after {applied:.2f} s")
        time.sleep(2)  # every search instance polls the file: all have the edit by now
        served["config"].write_text("scenes: [this is not valid")
        time.sleep(3)
        broken_from = time.monotonic()
        time.sleep(2)
        assert all(arm.startswith("fresh") for t, arm in seen if t > broken_from)
    finally:
        stop.set()
        worker.join()
        served["config"].write_text(CONFIG)
    assert not failures
    log = (served["settings"].data_dir / "logs" / "tritonserver.log").read_text()
    assert "rejected, the last good one keeps serving: not valid YAML" in log
    time.sleep(2)  # back to the original config for the tests that follow
    assert (
        client.search("upgrade", "debian_faq", 3, params={"experiments": {"rank": "truncate"}})["experiments"]["rank"]
        == "truncate"
    )


def test_eval_table_per_forced_ranker(served, faq, cli):
    queries = write_jsonl(faq.queries, served["base"] / "judged.jsonl")
    arms = ["rank=truncate", "rank=mmr", "rank=hybrid", "rank=hybrid_rrf"]
    args = ["eval", "--queries", str(queries), "--collection", "debian_faq", "--url", served["url"]]
    for arm in arms:
        args += ["--experiment", f"match=deep,{arm}"]
    table = cli(*args).stdout
    print("\n" + table)
    rows = [json.loads(line) for line in cli(*args, "--json").stdout.splitlines()]
    assert [row["experiments"] for row in rows] == [f"match=deep,{arm}" for arm in arms]
    assert all(row["queries"] == len(faq.queries) and 0 < row["recall@1"] <= row["recall@10"] <= 1 for row in rows)
    assert "recall@1" in table.splitlines()[0] and len(table.splitlines()) == 1 + len(arms)
