"""The `search` model's logic, without Triton: a request through the retrieval layers.

Each layer runs the arm the experiment config assigns to the user (or the request forces);
see `layers/`. Plain Python with the embedding step injected, so it is tested without a
server; the Triton model only turns tensors into a `SearchRequest` and calls `Searcher.search`.
Nothing request-scoped is stored on the `Searcher`: concurrent requests share only the
store connections, a read-only collection-info cache and the (immutable) current config.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from mmsearch.model_repository.contract import LAYERS, MAX_QUERY_CHARS, MAX_TOP_K, CollectionInfo
from mmsearch.model_repository.search.experiments import EMPTY, ConfigError, ExperimentConfig, assign
from mmsearch.model_repository.search.layers import Embedder, Match, Query, QueryProcessing, Rank, Summary
from mmsearch.model_repository.search.rankers import RankError
from mmsearch.model_repository.search.request import INTERNAL, UNAVAILABLE, SearchError, SearchRequest
from mmsearch.stores import DocumentStore, StoreError, StoreRejected, StoreUnavailable, UnknownCollection, VectorStore

log = logging.getLogger(__name__)

T = TypeVar("T")
INFO_TTL_S = 5.0  # collection info is re-read this often (fields grow as documents are indexed)


class NullRecorder:
    def observe(self, scene: str, stage: str, ms: float) -> None:
        pass

    def count(self, scene: str, layer: str, arm: str) -> None:
        pass


class Searcher:
    def __init__(
        self,
        embed: Embedder,
        open_vectors: Callable[[], VectorStore],
        open_documents: Callable[[], DocumentStore],
        *,
        experiments: Callable[[], ExperimentConfig] = lambda: EMPTY,
        recorder=None,
        max_top_k: int = MAX_TOP_K,
        max_query_chars: int = MAX_QUERY_CHARS,
    ):
        self.experiments = experiments  # the current config (hot-reloaded by the model)
        self.recorder = recorder or NullRecorder()
        self._open_vectors = open_vectors
        self._open_documents = open_documents
        self._vectors: VectorStore | None = None
        self._documents: DocumentStore | None = None
        self._lock = threading.Lock()
        self._info: dict[str, tuple[float, CollectionInfo]] = {}
        self.max_top_k = max_top_k
        self.max_query_chars = max_query_chars
        self.summary = Summary(self.documents)
        self.layers = (QueryProcessing(embed), Match(self.vectors), Rank(self.documents), self.summary)

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
        except (StoreError, OSError) as exc:
            log.warning("stores not reachable yet, will retry on the first request: %s", exc)
            self._reset()

    def _reset(self) -> None:
        with self._lock:
            self._vectors = None
            if self._documents is not None:
                self._documents.close()
            self._documents = None
            self._info.clear()

    def close(self) -> None:
        vectors = self._vectors
        self._reset()
        if vectors is not None:
            vectors.close()

    def collection_info(self, name: str) -> CollectionInfo:
        return self.resolve(name)[1]

    def resolve(self, name: str) -> tuple[str, CollectionInfo]:
        """The physical collection behind `name` (an alias, or itself) and what its indexer
        recorded. A request searches that collection and embeds its query with that collection's
        model, so a rollout can never mix two encoders in one answer."""
        cached = self._info.get(name)
        if cached and time.monotonic() - cached[0] < INFO_TTL_S:
            return cached[1]
        resolved = self.vectors().describe(name)
        self._info[name] = (time.monotonic(), resolved)
        return resolved

    def search(self, request: SearchRequest) -> dict:
        outcome = self.search_many([request])[0]
        if isinstance(outcome, SearchError):
            raise outcome
        return outcome

    def search_many(self, requests: Sequence[SearchRequest]) -> list[dict | SearchError]:
        """Every request's result, or the SearchError that answers it. The searches share each
        layer's model and store calls; a bad request fails alone."""
        started = time.perf_counter()
        outcomes: list[dict | SearchError | None] = [None] * len(requests)
        queries: list[tuple[int, Query]] = []
        for position, request in enumerate(requests):
            try:
                if request.is_catalog:
                    outcomes[position] = self._guarded(self.catalog)
                    continue
                request.validate(self.max_top_k, self.max_query_chars)
                queries.append((position, self._guarded(lambda request=request: self._prepare(request))))
            except SearchError as exc:
                outcomes[position] = exc.detached()
        if queries:
            for position, outcome in zip([p for p, _ in queries], self._run([q for _, q in queries], started),
                                         strict=True):
                outcomes[position] = outcome
        return outcomes

    def catalog(self) -> dict:
        """Each collection this server can search: size, modality, query kinds, filter fields and
        the arms of its scene per layer (what a UI lists and lets a user force)."""
        config = self.experiments()
        collections = []
        for name in self.searchable():
            info = self.collection_info(name)
            scene = config.scene_for(name)
            collections.append({
                "name": name,
                "modality": info.modality,
                "size": self.vectors().count(name),
                "queries": sorted(info.queries),
                "fields": list(info.fields or []),
                "text_field": info.text_field,
                "scene": scene.name,
                "layers": {layer: [arm.name for arm in scene.layers.get(layer, ())] for layer in LAYERS},
            })
        return {"collections": collections}

    def searchable(self) -> list[str]:
        """What users search: the aliases, and collections no alias points to."""
        aliases = self.vectors().aliases()
        return sorted(set(aliases) | (set(self.vectors().collections()) - set(aliases.values())))

    def _guarded(self, answer: Callable[[], T]) -> T:
        """Store and ranking failures become a SearchError naming the cause and whose fault it
        is. Only an unreachable store drops the connections (the next request reconnects): a
        store that refused a request is up, and keeps its clients."""
        try:
            return answer()
        except (UnknownCollection, RankError, StoreRejected) as exc:
            raise SearchError(str(exc)) from None
        except StoreUnavailable as exc:
            self._reset()
            raise SearchError(f"store unavailable: {exc}", UNAVAILABLE) from None
        except StoreError as exc:
            raise SearchError(str(exc), INTERNAL) from None

    def _prepare(self, request: SearchRequest) -> Query:
        """The request with its collection's info, its scene, its arm per layer, and every
        layer's checks done: a bad request costs no model or store call."""
        physical, info = self.resolve(request.collection)
        config = self.experiments()
        scene = config.scene_for(request.collection)
        try:
            arms = assign(config, scene, request.user_id, request.params.get("experiments"))
        except ConfigError as exc:
            raise SearchError(str(exc)) from None
        if target := arms["match"].params.get("collection"):  # an A/B arm on another physical collection
            physical, arm_info = self.resolve(target)
            if arm_info.modality != info.modality:
                raise SearchError(f"match arm '{arms['match'].name}' searches '{target}', which holds "
                                  f"{arm_info.modality} documents; '{request.collection}' holds {info.modality}")
            info = arm_info
        query = Query(request, info, scene, arms, collection=physical)
        for layer in self.layers:
            layer.prepare(query)
        return query

    def _run(self, queries: list[Query], started: float) -> list[dict | SearchError]:
        """The layers in order over the live queries; stage timings are the batch's."""
        timings: dict[str, float] = {}
        try:
            for layer in self.layers:
                mark = time.perf_counter()
                self._guarded(lambda layer=layer: layer.run([query for query in queries if query.error is None]))
                timings[layer.stage] = round((time.perf_counter() - mark) * 1000, 3)
        except SearchError as exc:  # a store or ranker failure fails every request still running
            for query in queries:
                query.error = query.error or exc.detached()
        timings["total"] = round((time.perf_counter() - started) * 1000, 3)
        outcomes = []
        for query in queries:
            if query.error is None:
                self._record(query, timings)
            outcomes.append(query.error or self._result(query, timings))
        return outcomes

    def _record(self, query: Query, timings: dict[str, float]) -> None:
        for stage, ms in timings.items():
            self.recorder.observe(query.scene.name, stage, ms)
        for layer, arm in query.arms.items():
            self.recorder.count(query.scene.name, layer, arm.name)

    def _result(self, query: Query, timings: dict[str, float]) -> dict:
        request = query.request
        result = {
            "query": request.query,
            "query_modality": request.modality,
            "collection": request.collection,
            "scene": query.scene.name,
            "hits": self.summary.hits(query),
            "experiments": {layer: arm.name for layer, arm in query.arms.items()},
            "timings_ms": timings,
        }
        if request.params.get("debug"):  # how the answer was made, for tuning and the UI
            result["debug"] = query.debug
        return result
