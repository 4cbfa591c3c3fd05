"""rank: reorder the candidates with a ranker (truncate, mmr, hybrid; see rankers.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from mmsearch.model_repository.search.experiments import Arm
from mmsearch.model_repository.search.layers.base import Layer, Query, fetch_documents
from mmsearch.model_repository.search.rankers import RANKER_PARAMS, RANKERS, Candidate, rank
from mmsearch.stores import DocumentStore

NEEDS_VECTORS = {"mmr"}  # redundancy between candidates
NEEDS_TEXT = {"hybrid"}  # lexical scoring


def ranker_of(name: str, params: Mapping) -> tuple[str, dict]:
    """The ranker an arm runs (params.ranker, else an arm named after a ranker, else truncate)."""
    ranker = params.get("ranker") or (name if name in RANKERS else "truncate")
    return ranker, {k: v for k, v in params.items() if k not in ("ranker", "text_field")}


class Rank(Layer):
    name, stage = "rank", "rank"
    params = frozenset({"ranker", "text_field"}.union(*RANKER_PARAMS.values()))

    def __init__(self, documents: Callable[[], DocumentStore]):
        self.documents = documents

    @classmethod
    def check_arm(cls, arm: Arm) -> None:
        ranker, params = ranker_of(arm.name, arm.params)
        rank(ranker, query_text="", query_vector=None, candidates=[], top_k=1, params=params)  # RankError if bad

    def prepare(self, query: Query) -> None:
        arm = query.arms[self.name]
        query.ranker, query.rank_params = ranker_of(arm.name, arm.params)
        query.wants_vectors, query.wants_text = query.ranker in NEEDS_VECTORS, query.ranker in NEEDS_TEXT
        query.debug.update(ranker=query.ranker, rank_params=query.rank_params)

    def run(self, queries: Sequence[Query]) -> None:
        fetch_documents(self.documents, {q: [hit.id for hit in q.hits] for q in queries if q.wants_text})
        for query in queries:
            text_field = query.params(self.name).get("text_field") or query.info.text_field
            candidates = [
                Candidate(hit.id, hit.score, hit.vector, str((query.documents.get(hit.id) or {}).get(text_field, "")))
                for hit in query.hits
            ]
            query.ranked = rank(query.ranker, query_text=query.request.query, query_vector=query.vector,
                                candidates=candidates, top_k=query.request.top_k, params=query.rank_params)
