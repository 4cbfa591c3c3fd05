"""The retrieval layers behind the `search` model: qp (embed) -> match -> rank -> summary.

Each layer runs the arm the experiment config assigns to the user (or the request forces):
qp picks the query tower and rewrites the text, match sets recall depth, filter and index
params, rank picks a ranker (truncate, mmr, hybrid), summary picks the returned fields.
Plain Python with the embedding step injected, so it is tested without a server; the
Triton model only turns tensors into a `SearchRequest` and calls `Searcher.search`.
Nothing request-scoped is stored on the `Searcher`: concurrent requests share only the
store connections, a read-only metadata cache and the (immutable) current config.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from mmsearch.model_repository.experiments import EMPTY, LAYERS, Arm, ConfigError, ExperimentConfig, assign
from mmsearch.model_repository.filters import FilterError, combine, compile_filter
from mmsearch.model_repository.rankers import RANKER_PARAMS, RANKERS, Candidate, RankError, rank
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
KNOWN_PARAMS = {"filter", "experiments", "debug", "catalog"}
METADATA_TTL_S = 5.0
TIE_MARGIN = 8  # extra candidates fetched so that ties at the cut are resolved by id
TIE_DECIMALS = 5  # scores equal to this many decimals are ties (batching noise is ~1e-7)

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
    forced = request.params.get("experiments", {})
    if not isinstance(forced, dict) or not all(isinstance(v, str) for v in forced.values()):
        raise SearchError('PARAMS "experiments" must map layers to arm names, e.g. {"rank": "mmr"}')


class Searcher:
    def __init__(
        self,
        embed: Embedder,
        open_vectors: Callable[[], VectorStore],
        open_documents: Callable[[], DocumentStore],
        *,
        experiments: Callable[[], ExperimentConfig] = lambda: EMPTY,
        recorder=None,
        max_top_k: int = DEFAULT_MAX_TOP_K,
        max_query_chars: int = DEFAULT_MAX_QUERY_CHARS,
    ):
        self.embed = embed
        self.experiments = experiments  # the current config (hot-reloaded by the model)
        self.recorder = recorder or NullRecorder()
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
        if request.params.get("catalog") is True:  # asks what can be searched, not a search
            return self._guarded(self.catalog)
        validate(request, self.max_top_k, self.max_query_chars)
        return self._guarded(lambda: self._search(request))

    def catalog(self) -> dict:
        """Each collection this server can search: size, modality, query kinds, filter fields and
        the arms of its scene per layer (what a UI lists and lets a user force)."""
        config = self.experiments()
        collections = []
        for name in sorted(self.vectors().collections()):
            metadata = self.collection_metadata(name)
            modality = metadata.get("modality", "text")
            scene = config.scene_for(name)
            collections.append({
                "name": name,
                "modality": modality,
                "size": self.vectors().count(name),
                "queries": sorted(metadata.get("query_models") or QUERY_MODELS.get(modality, {})),
                "fields": metadata.get("fields", []),
                "text_field": metadata.get("text_field", ""),
                "scene": scene.name,
                "layers": {layer: [arm.name for arm in scene.layers.get(layer, ())] for layer in LAYERS},
            })
        return {"collections": collections}

    def _guarded(self, answer: Callable[[], dict]) -> dict:
        """Store and ranking failures become a SearchError naming the cause; a broken store
        connection is dropped so the next request reconnects."""
        try:
            return answer()
        except (UnknownCollection, RankError) as exc:
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

    def query_model(self, request: SearchRequest, metadata: dict, override: str | None = None) -> str:
        modality = metadata.get("modality", "text")
        models = metadata.get("query_models") or QUERY_MODELS.get(modality, {})
        if request.modality not in models:
            raise SearchError(
                f"collection '{request.collection}' holds {modality} documents and cannot be searched "
                f"with an {request.modality} query (it takes: {', '.join(sorted(models))})"
            )
        # A qp arm may swap the text tower (e.g. a fine-tuned model of the same dimension).
        return override if override and request.modality == "text" else models[request.modality]

    def _search(self, request: SearchRequest) -> dict:
        timings: dict[str, float] = {}
        started = time.perf_counter()

        def lap(stage: str, since: float) -> float:
            now = time.perf_counter()
            timings[stage] = round((now - since) * 1000, 3)
            return now

        metadata = self.collection_metadata(request.collection)
        config = self.experiments()
        scene = config.scene_for(request.collection)
        try:
            arms = assign(config, scene, request.user_id, request.params.get("experiments"))
        except ConfigError as exc:
            raise SearchError(str(exc)) from None
        qp, match, rank_arm, summary = (arms[layer].params for layer in LAYERS)
        try:  # checked before any model runs: a bad filter costs nothing
            fields = metadata.get("fields")
            expression = combine(compile_filter(match.get("filter", ""), fields), compile_filter(request.params.get("filter", ""), fields))
        except FilterError as exc:
            raise SearchError(f"invalid filter: {exc}") from None

        mark = time.perf_counter()
        model = self.query_model(request, metadata, qp.get("model"))
        if request.image is not None:
            vector = self.embed(model, "IMAGE", request.image)
        else:
            text = request.query.lower() if qp.get("lowercase") else request.query
            vector = self.embed(model, "TEXT", qp.get("prefix", "") + text)
        mark = lap("embed", mark)

        ranker, rank_params = ranker_of(arms["rank"])
        depth = max(request.top_k, int(match.get("depth", request.top_k)))
        hits = self.vectors().search(request.collection, vector, limit=depth + TIE_MARGIN, filter=expression,
                                     search_params=match.get("search_params"), with_vectors=ranker == "mmr",
                                     consistency=match.get("consistency", "Strong"))
        # Duplicate documents tie exactly, and which of them Milvus returns first (or at all, at
        # the cut) depends on float noise from dynamic batching. Ordering ties by id makes the
        # same request give the same answer, alone or under load.
        hits = sorted(hits, key=lambda hit: (-round(hit.score, TIE_DECIMALS), hit.id))[:depth]
        mark = lap("match", mark)

        documents: dict[str, dict] = {}
        if ranker == "hybrid":  # lexical scoring needs the candidates' text
            documents = self.documents().get_many(request.collection, [hit.id for hit in hits])
        text_field = rank_arm.get("text_field") or metadata.get("text_field", "")
        candidates = [Candidate(hit.id, hit.score, hit.vector, str((documents.get(hit.id) or {}).get(text_field, ""))) for hit in hits]
        ranked = rank(ranker, query_text=request.query, query_vector=vector, candidates=candidates, top_k=request.top_k, params=rank_params)
        mark = lap("rank", mark)

        missing = [doc_id for doc_id, _ in ranked if doc_id not in documents]
        if missing:
            documents.update(self.documents().get_many(request.collection, missing))
        lap("summary", mark)
        absent = [doc_id for doc_id, _ in ranked if doc_id not in documents]
        if absent:
            log.warning("collection %s: %d hits have no document in the document store", request.collection, len(absent))
        timings["total"] = round((time.perf_counter() - started) * 1000, 3)
        for stage, ms in timings.items():
            self.recorder.observe(scene.name, stage, ms)
        for layer, arm in arms.items():
            self.recorder.count(scene.name, layer, arm.name)
        result = {
            "query": request.query,
            "query_modality": request.modality,
            "collection": request.collection,
            "scene": scene.name,
            "hits": [
                {"id": doc_id, "score": round(score, 6), "document": project(documents.get(doc_id), summary.get("fields"))}
                for doc_id, score in ranked
            ],
            "experiments": {layer: arm.name for layer, arm in arms.items()},
            "timings_ms": timings,
        }
        if request.params.get("debug"):  # how the answer was made, for tuning and the UI
            result["debug"] = {"query_model": model, "filter": expression, "depth": depth, "candidates": len(hits),
                               "ranker": ranker, "rank_params": rank_params}
        return result


def ranker_of(arm: Arm) -> tuple[str, dict]:
    """The ranker an arm runs (params.ranker, else an arm named after a ranker, else truncate)."""
    name = arm.params.get("ranker") or (arm.name if arm.name in RANKERS else "truncate")
    return name, {k: v for k, v in arm.params.items() if k not in ("ranker", "text_field")}


def project(document: dict | None, fields) -> dict | None:
    """The summary layer: only the fields an arm asks for (the id always)."""
    if document is None or not fields:
        return document
    return {"id": document.get("id"), **{f: document[f] for f in fields if f in document}}


class NullRecorder:
    def observe(self, scene: str, stage: str, ms: float) -> None:
        pass

    def count(self, scene: str, layer: str, arm: str) -> None:
        pass


# Parameters an arm may set per layer; checked when the config is loaded.
LAYER_PARAMS = {
    "qp": {"model", "prefix", "lowercase"},
    "match": {"depth", "filter", "search_params", "consistency"},
    "rank": {"ranker", "text_field"}.union(*RANKER_PARAMS.values()),
    "summary": {"fields"},
}
MAX_DEPTH = 2000
CONSISTENCY_LEVELS = ("Strong", "Bounded", "Session", "Eventually")  # Milvus's, for the match layer


def arm_validator(known_models: set[str] | None = None):
    """Checks an arm's params against what the server has; used by parse_config."""

    def validate_arm(where: str, layer: str, arm: Arm) -> None:
        unknown = set(arm.params) - LAYER_PARAMS[layer]
        if unknown:
            raise ConfigError(f"{where}: unknown {layer} params {', '.join(sorted(unknown))} (known: {', '.join(sorted(LAYER_PARAMS[layer]))})")
        params = arm.params
        if layer == "qp" and "model" in params and known_models is not None and params["model"] not in known_models:
            raise ConfigError(f"{where}: unknown model '{params['model']}' (models: {', '.join(sorted(known_models))})")
        if layer == "match":
            depth = params.get("depth", 1)
            if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
                raise ConfigError(f"{where}: depth must be an integer between 1 and {MAX_DEPTH}")
            try:
                compile_filter(params.get("filter", ""))
            except FilterError as exc:
                raise ConfigError(f"{where}: invalid filter: {exc}") from None
            if params.get("consistency", "Strong") not in CONSISTENCY_LEVELS:
                raise ConfigError(f"{where}: consistency must be one of {', '.join(CONSISTENCY_LEVELS)}")
        if layer == "rank":
            name, rank_params = ranker_of(arm)
            try:
                rank(name, query_text="", query_vector=None, candidates=[], top_k=1, params=rank_params)
            except RankError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        if layer == "summary" and not (isinstance(params.get("fields", []), list) and all(isinstance(f, str) for f in params.get("fields", []))):
            raise ConfigError(f"{where}: fields must be a list of field names")

    return validate_arm
