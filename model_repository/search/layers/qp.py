"""qp, query processing: pick the query tower and shape the text, then embed the query."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from mmsearch.model_repository.contract import IMAGE, TEXT
from mmsearch.model_repository.search.experiments import Arm
from mmsearch.model_repository.search.layers.base import Layer, Query
from mmsearch.model_repository.search.request import SearchError

# (model name, input tensor name TEXT|IMAGE, payload) -> unit vector
Embedder = Callable[[str, str, "str | bytes"], np.ndarray]


class QueryProcessing(Layer):
    name, stage = "qp", "embed"
    # model: another text tower of the same dimension (e.g. a fine-tuned one); prefix and
    # lowercase: what some encoders were trained with ("query: ...").
    params = frozenset({"model", "prefix", "lowercase"})

    def __init__(self, embed: Embedder):
        self.embed = embed

    @classmethod
    def check_arm(cls, arm: Arm, known_models: set[str] | None) -> None:
        model = arm.params.get("model")
        if model is not None and known_models is not None and model not in known_models:
            raise ValueError(f"unknown model '{model}' (models: {', '.join(sorted(known_models))})")

    def prepare(self, query: Query) -> None:
        request, models = query.request, query.info.queries
        if request.modality not in models:
            raise SearchError(
                f"collection '{request.collection}' holds {query.info.modality} documents and cannot be searched "
                f"with an {request.modality} query (it takes: {', '.join(sorted(models))})"
            )
        override = query.params(self.name).get("model")
        query.model = override if override and request.modality == "text" else models[request.modality]
        query.debug["query_model"] = query.model

    def run(self, queries: Sequence[Query]) -> None:
        for query in queries:
            if query.request.image is not None:
                query.vector = self.embed(query.model, IMAGE, query.request.image)
                continue
            params = query.params(self.name)
            text = query.request.query.lower() if params.get("lowercase") else query.request.query
            query.vector = self.embed(query.model, TEXT, params.get("prefix", "") + text)
