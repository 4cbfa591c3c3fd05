"""qp, query processing: pick the query tower and shape the text, then embed the queries."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from mmsearch.model_repository.contract import IMAGE, TEXT
from mmsearch.model_repository.search.layers.base import Layer, Query, grouped
from mmsearch.model_repository.search.request import SearchError

# (model name, input tensor name TEXT|IMAGE, payloads) -> unit vectors, one row per payload
Embedder = Callable[[str, str, Sequence["str | bytes"]], np.ndarray]


class QueryProcessing(Layer):
    name, stage = "qp", "embed"
    # prefix and lowercase: what some encoders were trained with ("query: ..."). The model is
    # never an arm's choice: it is the one recorded on the collection searched (a match arm may
    # search another collection, and so another model).
    params = frozenset({"prefix", "lowercase"})

    def __init__(self, embed: Embedder):
        self.embed = embed

    def prepare(self, query: Query) -> None:
        request, models = query.request, query.info.queries
        if request.modality not in models:
            raise SearchError(
                f"collection '{request.collection}' holds {query.info.modality} documents and cannot be searched "
                f"with an {request.modality} query (it takes: {', '.join(sorted(models))})"
            )
        query.model = models[request.modality]
        query.debug.update(collection=query.collection, query_model=query.model)

    def payload(self, query: Query) -> str | bytes:
        if query.request.image is not None:
            return query.request.image
        params = query.params(self.name)
        text = query.request.query.lower() if params.get("lowercase") else query.request.query
        return params.get("prefix", "") + text

    def run(self, queries: Sequence[Query]) -> None:
        """One embedding call per model and input kind for the whole batch."""
        kinds = grouped(queries, lambda query: (query.model, IMAGE if query.request.image is not None else TEXT))
        for (model, input_name), group in kinds.items():
            try:
                vectors = self.embed(model, input_name, [self.payload(query) for query in group])
            except SearchError as exc:
                # One bad input (an unreadable image) fails the call: embed one by one so that
                # only its own request fails.
                one_by_one = [self._embed_one(model, input_name, q) for q in group] if len(group) > 1 else None
                vectors = one_by_one or [exc.detached()]
            for query, vector in zip(group, vectors, strict=True):
                if isinstance(vector, SearchError):
                    query.error = vector
                else:
                    query.vector = vector

    def _embed_one(self, model: str, input_name: str, query: Query) -> np.ndarray | SearchError:
        try:
            return self.embed(model, input_name, [self.payload(query)])[0]
        except SearchError as exc:
            return exc.detached()
