"""Model rollout on a real Triton and Milvus Lite: a second text model hot-added to the running
server, a collection built by it beside the live one, the alias switched and switched back under
load with no failed search, and every answer embedded by the model of the collection that gave it.

The second model is the shipped MiniLM exported again under another name: this test is about the
mechanics; what tuning buys is measured with `mmsearch tune` and `mmsearch eval` (README)."""

from __future__ import annotations

import json
import shutil
import threading
import time

import pytest

from mmsearch.client.search_client import ClientError, SearchClient
from mmsearch.export.text_encoder import default_text_model
from mmsearch.model_repository.contract import CollectionInfo
from mmsearch.settings import StoreSettings
from mmsearch.stores import VectorStore

pytestmark = pytest.mark.integration
ALIAS, TUNED = "notes", "tuned_text_embed"
DOCS = [{"id": f"n{i}", "text": f"note {i} about {topic}"} for i, topic in enumerate(
    ["apt upgrades", "kernel modules", "printer drivers", "mail servers", "disk partitions", "network bridges"] * 4)]


@pytest.fixture(scope="module")
def served(tmp_path_factory, exported_repository, start_triton, cli):
    base = tmp_path_factory.mktemp("rollout")
    repository = base / "repository"
    shutil.copytree(exported_repository, repository)  # models are added to it while it serves
    settings = StoreSettings.resolve(base / "data")
    server = start_triton(repository, settings)
    corpus = base / "notes.jsonl"
    corpus.write_text("".join(json.dumps(doc) + "\n" for doc in DOCS))
    url = f"localhost:{server.ports.grpc}"
    flags = ["--url", url, "--data-dir", str(settings.data_dir)]
    cli("index", "--input", str(corpus), "--collection", ALIAS, *flags)
    return {"server": server, "repository": repository, "settings": settings, "corpus": corpus, "url": url,
            "flags": flags, "client": SearchClient(url)}


def collections(served, cli) -> dict[str, dict]:
    run = cli("collections", "--json", "--data-dir", str(served["settings"].data_dir))
    return {row["collection"]: row for row in map(json.loads, run.stdout.splitlines())}


def test_a_model_is_hot_added_rolled_out_and_back_under_load_without_a_failed_search(served, cli):
    client, pid = served["client"], served["server"].triton.process.pid
    run = cli("export", "--text-model", default_text_model(), "--name", TUNED, "--repository",
              str(served["repository"]), "--load", "--url", served["url"])
    assert f"loaded tuned_text_tokenizer, tuned_text_encoder, {TUNED}" in run.stdout
    assert client.models()[TUNED] == "READY" and served["server"].triton.process.pid == pid  # no restart

    (live,) = collections(served, cli)
    built = cli("index", "--input", str(served["corpus"]), "--collection", ALIAS, "--model", TUNED, *served["flags"])
    (tuned,) = set(collections(served, cli)) - {live}
    assert f"built {tuned} ({TUNED}) beside the live {live}" in built.stdout
    assert tuned.startswith(f"{ALIAS}__{TUNED}__") and collections(served, cli)[live]["aliases"] == [ALIAS]

    answers, failures, stop = [], [], threading.Event()

    def search_loop():
        while not stop.is_set():
            try:
                result = client.search("kernel modules", ALIAS, 3, params={"debug": True})
                answers.append((result["debug"]["collection"], result["debug"]["query_model"], result["hits"][0]["id"]))
            except ClientError as exc:
                failures.append(str(exc))

    threads = [threading.Thread(target=search_loop) for _ in range(4)]
    for thread in threads:
        thread.start()
    store = ["--data-dir", str(served["settings"].data_dir)]
    try:
        time.sleep(2)
        switched = cli("rollout", ALIAS, "--to", tuned, *store)
        time.sleep(8)  # past the search model's 5 s collection-info cache
        rolled_back = cli("rollout", ALIAS, "--rollback", *store)
        time.sleep(8)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    print(f"\n{len(answers)} searches during rollout and rollback, {len(failures)} failed")
    assert f"{ALIAS}: {live} (text_embed) -> {tuned} ({TUNED})" in switched.stdout
    assert f"{ALIAS}: {tuned} -> {live} (rolled back)" in rolled_back.stdout
    assert failures == []
    assert {collection for collection, _, _ in answers} == {live, tuned}
    assert all(model == collection.split("__")[1] for collection, model, _ in answers)  # never mixed
    assert answers[-1][0] == live
    assert collections(served, cli)[live]["aliases"] == [ALIAS] and collections(served, cli)[tuned]["vectors"] == 24


def test_rollouts_and_drops_that_would_break_search_are_refused(served, cli):
    store = ["--data-dir", str(served["settings"].data_dir)]
    live = next(name for name, row in collections(served, cli).items() if row["aliases"] == [ALIAS])
    vectors = VectorStore.open(served["settings"])
    try:
        vectors.ensure_collection("other_dim", CollectionInfo.for_index("text", 8, "text"))
        vectors.ensure_collection("photos_x", CollectionInfo.for_index("image", 384))
    finally:
        vectors.close()
    refusals = {
        ("rollout", ALIAS, "--to", "other_dim"): "serves text documents as 384-d vectors and 'other_dim' holds text "
                                                 "documents as 8-d vectors",
        ("rollout", ALIAS, "--to", "photos_x"): "'photos_x' holds image documents",
        ("rollout", ALIAS, "--to", "missing"): "'missing' is not a physical collection",
        ("rollout", ALIAS, "--to", live): f"already points to '{live}'",
        ("rollout", ALIAS, "--rollback"): "was not reached by a rollout: nothing to roll back to",
        ("rollout", "missing", "--to", live): "unknown collection 'missing'",
        ("collections", "--drop", live): f"'{live}' is live behind {ALIAS}: roll out another collection first",
        ("collections", "--drop", ALIAS): "is an alias",
        ("index", "--input", str(served["corpus"]), "--collection", ALIAS, "--modality", "image", "--model", TUNED,
         "--url", served["url"]): "--model names a text encoder",
    }
    for args, message in refusals.items():
        run = cli(*args, *store, check=False)
        assert run.returncode == 1 and message in run.stderr and "Traceback" not in run.stderr, (args, run.stderr)
    assert collections(served, cli)[live]["aliases"] == [ALIAS]
    assert cli("collections", "--drop", "other_dim", *store).stdout.strip() == "dropped other_dim"
