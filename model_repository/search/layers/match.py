"""match: recall candidates from Milvus: depth, filter, index search params, consistency."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import numpy as np

from mmsearch.model_repository.contract import collection_name_problem
from mmsearch.model_repository.search.experiments import Arm
from mmsearch.model_repository.search.filters import FilterError, combine, compile_filter
from mmsearch.model_repository.search.layers.base import Layer, Query, grouped
from mmsearch.model_repository.search.request import SearchError
from mmsearch.stores import CONSISTENCY_LEVELS, DEFAULT_CONSISTENCY, Hit, VectorStore

MAX_DEPTH = 2000
TIE_MARGIN = 8  # how much deeper a query whose ties cross the cut is asked again
TIE_DECIMALS = 5  # scores equal to this many decimals are ties (batching noise is ~1e-7)


class Match(Layer):
    name, stage = "match", "match"
    # collection: search another physical collection (e.g. one built by a tuned model) in this
    # arm, its queries embedded by that collection's model: an online A/B of two models.
    params = frozenset({"depth", "filter", "search_params", "consistency", "collection"})

    def __init__(self, vectors: Callable[[], VectorStore]):
        self.vectors = vectors

    @classmethod
    def check_arm(cls, arm: Arm) -> None:
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
        collection = params.get("collection", "x")
        if not isinstance(collection, str) or collection_name_problem(collection):
            raise ValueError(f"collection must be a collection name, got {collection!r}")

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
        """One Milvus search (nq = the group's size) per collection, filter and search settings."""
        for group in grouped(queries, self.call_key).values():
            first = group[0]
            rows = self.vectors().search_many(first.collection, np.stack([query.vector for query in group]),
                                              limit=first.depth + 1, **self.search_options(first))
            for query, hits in zip(group, rows, strict=True):
                query.hits = self.cut(query, hits)
                query.debug["candidates"] = len(query.hits)

    def search_options(self, query: Query) -> dict:
        """What the query asks of Milvus besides its vector and limit."""
        params = query.params(self.name)
        return {"filter": query.expression, "search_params": params.get("search_params"),
                "with_vectors": query.wants_vectors, "consistency": params.get("consistency", DEFAULT_CONSISTENCY)}

    def call_key(self, query: Query) -> tuple:
        """Queries with equal keys can share one Milvus search."""
        return query.collection, query.depth, json.dumps(self.search_options(query), sort_keys=True)

    def cut(self, query: Query, hits: list[Hit]) -> list[Hit]:
        """The best `depth` hits, ties at the cut broken by id.

        Duplicate documents tie exactly, and which of them Milvus returns first (or at all, at
        the cut) depends on float noise from batching. One hit past the cut shows whether a tie
        crosses it; only then is this query asked again, deeper, until the tie is inside.
        """
        limit = query.depth + 1
        while len(hits) == limit and tied(hits[query.depth - 1], hits[-1]) and limit < MAX_DEPTH + TIE_MARGIN:
            limit = min(2 * limit + TIE_MARGIN, MAX_DEPTH + TIE_MARGIN)
            hits = self.vectors().search(query.collection, query.vector, limit=limit,
                                         **self.search_options(query))
        return sorted(hits, key=lambda hit: (-round(hit.score, TIE_DECIMALS), hit.id))[: query.depth]


def tied(a: Hit, b: Hit) -> bool:
    return round(a.score, TIE_DECIMALS) == round(b.score, TIE_DECIMALS)
