"""The retrieval layers behind the `search` model: embed -> match -> rank -> summary.

Plain Python with the embedding step injected, so it is tested without a server; the
Triton model only turns tensors into a `SearchRequest` and calls `Searcher.search`.
Nothing request-scoped is stored on the `Searcher`: concurrent requests share only the
store connections and a read-only metadata cache.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from mmsearch.stores import DocumentStore, StoreError, UnknownCollection, VectorStore

log = logging.getLogger(__name__)

DEFAULT_MAX_TOP_K = 100
DEFAULT_MAX_QUERY_CHARS = 2048
MAX_QUERY_IMAGE_BYTES = 32 * 1024 * 1024
# Which ensemble embeds each kind of query, by collection modality. The indexer records the
# same mapping in the collection's metadata; this is the fallback for older collections.
QUERY_MODELS = {
    "text": {"text": "text_embed"},
    "image": {"text": "clip_text_embed", "image": "clip_image_embed"},
}
KNOWN_PARAMS = {"debug"}
METADATA_TTL_S = 5.0

# (model name, input tensor name TEXT|IMAGE, payload) -> unit vector
Embedder = Callable[[str, str, "str | bytes"], np.ndarray]


class SearchError(ValueError):
    """A request the server cannot answer; the message goes back to the client as is."""


@dataclass(frozen=True)
class SearchRequest:
    query: str
    collection: str
    top_k: int
    user_id: str = ""
    params: dict = field(default_factory=dict)
    image: bytes | None = None  # an encoded image file: an image -> image search

    @property
    def modality(self) -> str:
        return "image" if self.image is not None else "text"

    @classmethod
    def from_wire(cls, query, collection, top_k, user_id=b"", params=b"", image=None) -> "SearchRequest":
        def text(value) -> str:
            return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value or "")

        raw_params = text(params).strip()
        try:
            parsed = json.loads(raw_params) if raw_params else {}
        except ValueError as exc:
            raise SearchError(f"PARAMS is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise SearchError("PARAMS must be a JSON object")
        return cls(text(query), text(collection).strip(), int(top_k), text(user_id), parsed, image)


def validate(request: SearchRequest, max_top_k: int, max_query_chars: int) -> None:
    if request.image is not None:
        if not request.image:
            raise SearchError("IMAGE is empty: send the bytes of an image file")
        if len(request.image) > MAX_QUERY_IMAGE_BYTES:
            raise SearchError(f"IMAGE is {len(request.image)} bytes; the limit is {MAX_QUERY_IMAGE_BYTES}")
    elif not request.query.strip():
        raise SearchError("QUERY is empty: send the text to search for (or an IMAGE)")
    if len(request.query) > max_query_chars:
        raise SearchError(f"QUERY is {len(request.query)} characters long; the limit is {max_query_chars}")
    if not request.collection:
        raise SearchError("COLLECTION is empty: name the collection to search")
    if not 1 <= request.top_k <= max_top_k:
        raise SearchError(f"TOP_K must be between 1 and {max_top_k}, got {request.top_k}")
    unknown = set(request.params) - KNOWN_PARAMS
    if unknown:
        raise SearchError(f"unknown PARAMS keys: {', '.join(sorted(unknown))} (known: {', '.join(sorted(KNOWN_PARAMS))})")


class Searcher:
    def __init__(
        self,
        embed: Embedder,
        open_vectors: Callable[[], VectorStore],
        open_documents: Callable[[], DocumentStore],
        *,
        max_top_k: int = DEFAULT_MAX_TOP_K,
        max_query_chars: int = DEFAULT_MAX_QUERY_CHARS,
    ):
        self.embed = embed
        self._open_vectors = open_vectors
        self._open_documents = open_documents
        self._vectors: VectorStore | None = None
        self._documents: DocumentStore | None = None
        self._lock = threading.Lock()
        self._metadata: dict[str, tuple[float, dict]] = {}
        self.max_top_k = max_top_k
        self.max_query_chars = max_query_chars

    # Connections are opened on first use and dropped after a store error, so a store
    # that is down at start-up or restarts later does not take the model down with it.
    def vectors(self) -> VectorStore:
        with self._lock:
            if self._vectors is None:
                self._vectors = self._open_vectors()
            return self._vectors

    def documents(self) -> DocumentStore:
        with self._lock:
            if self._documents is None:
                self._documents = self._open_documents()
            return self._documents

    def connect(self) -> None:
        """Open both stores now if they are up (a store that is down is retried per request)."""
        try:
            self.vectors()
            self.documents()
        except Exception as exc:
            log.warning("stores not reachable yet, will retry on the first request: %s", exc)
            self._reset()

    def _reset(self) -> None:
        with self._lock:
            self._vectors = None
            if self._documents is not None:
                self._documents.close()
            self._documents = None
            self._metadata.clear()

    def collection_metadata(self, name: str) -> dict:
        cached = self._metadata.get(name)
        if cached and time.monotonic() - cached[0] < METADATA_TTL_S:
            return cached[1]
        metadata = self.vectors().metadata(name)
        self._metadata[name] = (time.monotonic(), metadata)
        return metadata

    def search(self, request: SearchRequest) -> dict:
        validate(request, self.max_top_k, self.max_query_chars)
        try:
            return self._search(request)
        except UnknownCollection as exc:
            raise SearchError(str(exc)) from None
        except StoreError as exc:
            self._reset()
            raise SearchError(str(exc)) from None
        except Exception as exc:
            # pymilvus and pymongo raise their own types for outages; name the stage's store.
            if exc.__class__.__module__.split(".")[0] in {"pymilvus", "pymongo", "grpc"}:
                self._reset()
                raise SearchError(f"store unavailable: {exc.__class__.__name__}: {exc}") from None
            raise

    def query_model(self, request: SearchRequest, metadata: dict) -> str:
        modality = metadata.get("modality", "text")
        models = metadata.get("query_models") or QUERY_MODELS.get(modality, {})
        if request.modality not in models:
            raise SearchError(
                f"collection '{request.collection}' holds {modality} documents and cannot be searched "
                f"with an {request.modality} query (it takes: {', '.join(sorted(models))})"
            )
        return models[request.modality]

    def _search(self, request: SearchRequest) -> dict:
        timings: dict[str, float] = {}
        started = time.perf_counter()

        def lap(stage: str, since: float) -> float:
            now = time.perf_counter()
            timings[stage] = round((now - since) * 1000, 3)
            return now

        metadata = self.collection_metadata(request.collection)
        mark = time.perf_counter()
        model = self.query_model(request, metadata)
        if request.image is not None:
            vector = self.embed(model, "IMAGE", request.image)
        else:
            vector = self.embed(model, "TEXT", request.query)
        mark = lap("embed", mark)
        candidates = self.vectors().search(request.collection, vector, limit=request.top_k)
        mark = lap("match", mark)
        ranked = candidates[: request.top_k]  # Milvus may return fewer than asked: that is fine
        mark = lap("rank", mark)
        documents = self.documents().get_many(request.collection, [doc_id for doc_id, _ in ranked])
        lap("summary", mark)
        missing = [doc_id for doc_id, _ in ranked if doc_id not in documents]
        if missing:
            log.warning("collection %s: %d hits have no document in the document store", request.collection, len(missing))
        timings["total"] = round((time.perf_counter() - started) * 1000, 3)
        return {
            "query": request.query,
            "query_modality": request.modality,
            "collection": request.collection,
            "hits": [
                {"id": doc_id, "score": round(score, 6), "document": documents.get(doc_id)} for doc_id, score in ranked
            ],
            "experiments": {"match": "baseline", "rank": "truncate"},
            "timings_ms": timings,
        }
