"""A store server killed (SIGKILL) in the middle of `mmsearch index`: the run stops with one line
that says how far it got, and the same command after the server is back gives exact counts.
Real servers: milvus-server (fixed ports, so these tests never run beside another that starts
one) and the MongoDB-wire server, restarted on the same port and data."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmsearch.settings import StoreSettings
from mmsearch.stores import MongoDocumentStore, VectorStore

pytestmark = pytest.mark.integration
DOCS = 4000
KILL_AFTER = 400  # documents in the document store (they are written before their vectors)


@pytest.fixture(scope="module")
def stores_and_triton(tmp_path_factory, exported_repository, start_triton, milvus_server, mongo_server):
    data_dir = tmp_path_factory.mktemp("outages")
    settings = StoreSettings.resolve(data_dir, milvus_uri=milvus_server.uri, mongo_uri=mongo_server.uri)
    server = start_triton(exported_repository, settings)
    corpus = data_dir / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": f"note {i} on package {i % 97} and mirror {i % 13}"})
                              + "\n" for i in range(DOCS)))
    flags = ["--input", str(corpus), "--url", f"localhost:{server.ports.grpc}", "--data-dir", str(data_dir),
             "--milvus-uri", milvus_server.uri, "--mongo-uri", mongo_server.uri]
    return {"milvus-server": milvus_server, "mongodb-wire": mongo_server, "flags": flags}


def wait_for_documents(uri: str, collection: str, at_least: int, run: subprocess.Popen) -> None:
    documents = MongoDocumentStore(uri)
    try:
        deadline = time.monotonic() + 300
        while documents.count(collection) < at_least:
            if run.poll() is not None:
                pytest.fail(f"the index run ended before the store could be killed: {run.communicate()}")
            assert time.monotonic() < deadline, f"fewer than {at_least} documents after 300 s"
            time.sleep(0.05)
    finally:
        documents.close()


@pytest.mark.parametrize("victim", ["milvus-server", "mongodb-wire"])
def test_a_store_killed_mid_index_stops_the_run_and_a_re_run_gives_exact_counts(stores_and_triton, victim, cli):
    collection = f"outage_{victim.replace('-', '_')}"
    args = ["index", "--collection", collection, *stores_and_triton["flags"]]
    server, mongo = stores_and_triton[victim], stores_and_triton["mongodb-wire"]
    run = subprocess.Popen([str(Path(sys.executable).parent / "mmsearch"), *args], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        wait_for_documents(mongo.uri, collection, KILL_AFTER, run)
        server.kill()
        _, stderr = run.communicate(timeout=300)
    finally:
        if server.process is None:
            server.start()
        run.kill()
    reason = stderr.strip().splitlines()[-1]
    print(f"\n{victim} killed: exit {run.returncode}: {reason}")
    assert run.returncode == 1 and "Traceback" not in stderr
    written = re.search(rf"stopped after writing (\d+) of {DOCS} documents \(writes are upserts", reason)
    assert written and int(written.group(1)) < DOCS

    rerun = cli(*args)
    assert f"collection now holds {DOCS} vectors and {DOCS} documents" in rerun.stdout
    vectors, documents = VectorStore(stores_and_triton["milvus-server"].uri), MongoDocumentStore(mongo.uri)
    try:
        assert vectors.count(collection, consistency="Strong") == DOCS
        assert documents.count(collection) == DOCS
        assert documents.get_many(collection, ["d0", f"d{DOCS - 1}"]).keys() == {"d0", f"d{DOCS - 1}"}
    finally:
        vectors.close()
        documents.close()
