"""The naive alternative `mmsearch bench` measures us against: what a user writes without Triton.

A small threaded HTTP service that, per request, encodes the query with sentence-transformers
(PyTorch, default settings), searches the same Milvus collection and reads the documents from
the same document store. POST /search {"query": ..., "collection": ..., "top_k": 10}.

    python -m mmsearch.client.bench.naive_service --port 8600 --model DIR --milvus-uri URI --data-dir DIR
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def make_handler(model, vectors, documents):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like any production client

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            vector = model.encode(body["query"], normalize_embeddings=True)
            hits = vectors.search(body["collection"], vector, limit=int(body.get("top_k", 10)))
            found = documents.get_many(body["collection"], [hit.id for hit in hits])
            payload = json.dumps(
                {"hits": [{"id": h.id, "score": h.score, "document": found.get(h.id)} for h in hits]}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self):  # readiness
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True, help="sentence-transformers model directory or hub name")
    parser.add_argument("--milvus-uri", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--mongo-uri")
    args = parser.parse_args(argv)

    from sentence_transformers import SentenceTransformer

    from mmsearch.settings import StoreSettings
    from mmsearch.stores import VectorStore, open_document_store

    settings = StoreSettings.resolve(args.data_dir, args.milvus_uri, args.mongo_uri)
    model = SentenceTransformer(args.model, device="cpu")
    model.encode("warm up")
    # One client of each store shared by the request threads, as such a service would.
    ThreadingHTTPServer.request_queue_size = 128  # the default listen backlog of 5 resets clients at c=16
    server = ThreadingHTTPServer(
        ("127.0.0.1", args.port), make_handler(model, VectorStore.open(settings), open_document_store(settings))
    )
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
