"""match: recall candidates from Milvus: depth, filter, index search params, consistency."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mmsearch.model_repository.search.experiments import Arm
from mmsearch.model_repository.search.filters import FilterError, combine, compile_filter
from mmsearch.model_repository.search.layers.base import Layer, Query
from mmsearch.model_repository.search.request import SearchError
from mmsearch.stores import VectorStore

MAX_DEPTH = 2000
CONSISTENCY_LEVELS = ("Strong", "Bounded", "Session", "Eventually")  # Milvus's own
DEFAULT_CONSISTENCY = "Strong"
TIE_MARGIN = 8  # extra candidates fetched so that ties at the cut are resolved by id
TIE_DECIMALS = 5  # scores equal to this many decimals are ties (batching noise is ~1e-7)


class Match(Layer):
    name, stage = "match", "match"
    params = frozenset({"depth", "filter", "search_params", "consistency"})

    def __init__(self, vectors: Callable[[], VectorStore]):
        self.vectors = vectors

    @classmethod
    def check_arm(cls, arm: Arm, known_models: set[str] | None) -> None:
        params = arm.params
        depth = params.get("depth", 1)
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
            raise ValueError(f"depth must be an integer between 1 and {MAX_DEPTH}")
        try:
            compile_filter(params.get("filter", ""))
        except FilterError as exc:
            raise ValueError(f"invalid filter: {exc}") from None
        if params.get("consistency", DEFAULT_CONSISTENCY) not in CONSISTENCY_LEVELS:
            raise ValueError(f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}")

    def prepare(self, query: Query) -> None:
        """The arm's filter AND the request's, against the fields the collection recorded."""
        fields = query.info.fields
        try:
            query.expression = combine(compile_filter(query.params(self.name).get("filter", ""), fields),
                                       compile_filter(query.request.params.get("filter", ""), fields))
        except FilterError as exc:
            raise SearchError(f"invalid filter: {exc}") from None
        query.depth = max(query.request.top_k, int(query.params(self.name).get("depth", query.request.top_k)))
        query.debug.update(filter=query.expression, depth=query.depth)

    def run(self, queries: Sequence[Query]) -> None:
        for query in queries:
            params = query.params(self.name)
            hits = self.vectors().search(query.request.collection, query.vector, limit=query.depth + TIE_MARGIN,
                                         filter=query.expression, search_params=params.get("search_params"),
                                         with_vectors=query.wants_vectors,
                                         consistency=params.get("consistency", DEFAULT_CONSISTENCY))
            # Duplicate documents tie exactly, and which of them Milvus returns first (or at all, at
            # the cut) depends on float noise from dynamic batching. Ordering ties by id makes the
            # same request give the same answer, alone or under load.
            query.hits = sorted(hits, key=lambda hit: (-round(hit.score, TIE_DECIMALS), hit.id))[:query.depth]
            query.debug["candidates"] = len(query.hits)
