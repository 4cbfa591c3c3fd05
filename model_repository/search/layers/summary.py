"""summary: fetch the ranked documents and return the fields an arm asks for."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from mmsearch.model_repository.search.experiments import Arm
from mmsearch.model_repository.search.layers.base import Layer, Query, fetch_documents
from mmsearch.stores import DocumentStore

log = logging.getLogger(__name__)


def project(document: dict | None, fields) -> dict | None:
    """Only the fields an arm asks for (the id always); all of them without `fields`."""
    if document is None or not fields:
        return document
    return {"id": document.get("id"), **{f: document[f] for f in fields if f in document}}


class Summary(Layer):
    name, stage = "summary", "summary"
    params = frozenset({"fields"})

    def __init__(self, documents: Callable[[], DocumentStore]):
        self.documents = documents

    @classmethod
    def check_arm(cls, arm: Arm) -> None:
        fields = arm.params.get("fields", [])
        if not (isinstance(fields, list) and all(isinstance(f, str) for f in fields)):
            raise ValueError("fields must be a list of field names")

    def run(self, queries: Sequence[Query]) -> None:
        fetch_documents(self.documents, {query: [doc_id for doc_id, _ in query.ranked] for query in queries})
        for query in queries:
            absent = [doc_id for doc_id, _ in query.ranked if doc_id not in query.documents]
            if absent:
                log.warning("collection %s: %d hits have no document in the document store",
                            query.request.collection, len(absent))

    def hits(self, query: Query) -> list[dict]:
        """The result's hits: id, score and the (projected) document, in ranked order."""
        fields = query.params(self.name).get("fields")
        return [{"id": doc_id, "score": round(score, 6), "document": project(query.documents.get(doc_id), fields)}
                for doc_id, score in query.ranked]
