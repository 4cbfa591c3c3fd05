"""The competent alternative `mmsearch bench` measures us against: what an engineer who knows
onnxruntime writes without Triton.

An async HTTP service (Starlette on uvicorn, one process, uvloop) runs the repository's own
tokenizer and ONNX encoder as single-threaded onnxruntime sessions, one per core, each owned by
a worker thread; then the same Milvus search and document read as the `search` model, from a
thread pool so the event loop never blocks. POST /search {"query": ..., "collection": ..., "top_k": 10}.

    python -m mmsearch.client.bench.onnx_service --port 8700 --repository DIR --milvus-uri URI --data-dir DIR
"""

from __future__ import annotations

import argparse
import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

STORE_THREADS = 16  # Milvus and document-store calls wait on I/O; more threads than cores


def make_app(repository: Path, vectors, documents, cores: int):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route
    from transformers import AutoTokenizer  # noqa: F401 -- transformers' lazy import, done once before threads race on it

    from mmsearch.client.bench.raw import raw_encoder

    local = threading.local()

    def encode(text: str):
        if not hasattr(local, "encode"):  # one single-threaded session per worker thread
            local.encode = raw_encoder(repository, 1)
        return local.encode([text])[0]

    encoders = ThreadPoolExecutor(max_workers=cores, thread_name_prefix="encoder")
    stores = ThreadPoolExecutor(max_workers=STORE_THREADS, thread_name_prefix="store")
    for future in [encoders.submit(encode, "warm up") for _ in range(4 * cores)]:
        future.result()

    async def search(request):
        body = await request.json()
        collection, top_k = body["collection"], int(body.get("top_k", 10))
        loop = asyncio.get_running_loop()
        vector = await loop.run_in_executor(encoders, encode, body["query"])
        hits = await loop.run_in_executor(stores, lambda: vectors.search(collection, vector, limit=top_k))
        found = await loop.run_in_executor(stores, documents.get_many, collection, [hit.id for hit in hits])
        return JSONResponse({"hits": [{"id": h.id, "score": h.score, "document": found.get(h.id)} for h in hits]})

    async def ready(request):
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/search", search, methods=["POST"]), Route("/", ready)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--repository", required=True, type=Path,
                        help="model repository with text_tokenizer and text_encoder")
    parser.add_argument("--milvus-uri", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--mongo-uri")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)

    import uvicorn

    from mmsearch.settings import StoreSettings
    from mmsearch.stores import VectorStore, open_document_store

    settings = StoreSettings.resolve(args.data_dir, args.milvus_uri, args.mongo_uri)
    app = make_app(args.repository, VectorStore.open(settings), open_document_store(settings), args.cores)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, backlog=128)


if __name__ == "__main__":
    main()
