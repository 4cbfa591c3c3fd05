"""What every retrieval layer is: a name, the params its arms may set, and a step.

A request travels as a `Query` through the layers in `LAYERS` order. First every layer's
`prepare` runs: cheap checks and decisions that need no model or store (a bad filter costs
nothing). Then every layer's `run` takes its step. `run` gets a list of queries so that a
layer may serve several requests with one model or store call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from mmsearch.model_repository.contract import CollectionInfo
from mmsearch.model_repository.search.experiments import Arm, Scene
from mmsearch.model_repository.search.request import SearchRequest
from mmsearch.stores import Hit


@dataclass
class Query:
    """One request on its way through the layers. Each request has its own: nothing here is shared."""

    request: SearchRequest
    info: CollectionInfo
    scene: Scene
    arms: Mapping[str, Arm]
    model: str = ""  # qp: the *_embed model for the query
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

    def params(self, layer: str) -> Mapping:
        return self.arms[layer].params


class Layer:
    """Subclasses set `name`, `stage` (its key in timings_ms) and `params`; they check an arm's
    params in `check_arm` (raising ValueError) and take their step in `run`."""

    name: ClassVar[str]
    stage: ClassVar[str]
    params: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def check_arm(cls, arm: Arm, known_models: set[str] | None) -> None:
        """Called when the experiment config loads; unknown params are refused before this."""

    def prepare(self, query: Query) -> None:
        """Per-request checks and choices that need no model or store; raise SearchError."""

    def run(self, queries: Sequence[Query]) -> None:
        raise NotImplementedError
