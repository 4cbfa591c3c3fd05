"""What every retrieval layer is: a name, the params its arms may set, and a step.

A request travels as a `Query` through the layers in `LAYERS` order. First every layer's
`prepare` runs: cheap checks and decisions that need no model or store (a bad filter costs
nothing). Then every layer's `run` takes its step for all the requests Triton handed over
together: one model or store call serves every request that can share it, and the results
are split back, so a request gets the same answer alone or in a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from mmsearch.model_repository.contract import CollectionInfo
from mmsearch.model_repository.search.experiments import Arm, Scene
from mmsearch.model_repository.search.request import SearchError, SearchRequest
from mmsearch.stores import DocumentStore, Hit


@dataclass(eq=False)  # compared and hashed by identity: each request is its own
class Query:
    """One request on its way through the layers. Each request has its own: nothing here is shared."""

    request: SearchRequest
    info: CollectionInfo
    scene: Scene
    arms: Mapping[str, Arm]
    collection: str = ""  # the physical Milvus collection searched (behind the request's alias)
    model: str = ""  # qp: the *_embed model for the query: the one that embedded that collection
    vector: np.ndarray | None = None  # qp: the query embedding
    expression: str = ""  # match: the canonical Milvus filter
    depth: int = 0  # match: how many candidates are recalled
    wants_vectors: bool = False  # rank: the ranker needs candidate vectors (mmr)
    wants_text: bool = False  # rank: the ranker needs candidate text (hybrid)
    ranker: str = ""
    rank_params: dict = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)  # match: candidates, best first
    documents: dict[str, dict] = field(default_factory=dict)  # fetched so far, by id
    ranked: list[tuple[str, float]] = field(default_factory=list)  # rank: (id, score), top_k at most
    debug: dict = field(default_factory=dict)  # how the answer was made (PARAMS debug)
    error: SearchError | None = None  # set when this request failed; the others in its batch go on

    def params(self, layer: str) -> Mapping:
        return self.arms[layer].params


def grouped(queries: Sequence[Query], key: Callable[[Query], Hashable]) -> dict[Hashable, list[Query]]:
    """Queries that one model or store call can serve together, in their order."""
    groups: dict[Hashable, list[Query]] = {}
    for query in queries:
        groups.setdefault(key(query), []).append(query)
    return groups


def fetch_documents(documents: Callable[[], DocumentStore], wanted: dict[Query, list[str]]) -> None:
    """One document-store read per collection for the union of the ids the queries want."""
    for collection, queries in grouped(list(wanted), lambda query: query.request.collection).items():
        ids = sorted({doc_id for query in queries for doc_id in wanted[query] if doc_id not in query.documents})
        if not ids:
            continue
        found = documents().get_many(collection, ids)
        for query in queries:
            query.documents.update((doc_id, found[doc_id]) for doc_id in wanted[query] if doc_id in found)


class Layer:
    """Subclasses set `name`, `stage` (its key in timings_ms) and `params`; they check an arm's
    params in `check_arm` (raising ValueError) and take their step in `run`."""

    name: ClassVar[str]
    stage: ClassVar[str]
    params: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def check_arm(cls, arm: Arm) -> None:
        """Called when the experiment config loads; unknown params are refused before this."""

    def prepare(self, query: Query) -> None:
        """Per-request checks and choices that need no model or store; raise SearchError."""

    def run(self, queries: Sequence[Query]) -> None:
        raise NotImplementedError
