"""The retrieval layers of the `search` model, one module each, run in `LAYERS` order:

    qp (embed the query) -> match (recall from Milvus) -> rank (reorder) -> summary (documents)

A new arm parameter is a change to its layer's module only: the layer declares the param,
checks it in `check_arm` and uses it in `prepare` or `run`.
"""

from __future__ import annotations

from mmsearch.model_repository.contract import LAYERS
from mmsearch.model_repository.search.experiments import Arm, ConfigError
from mmsearch.model_repository.search.layers.base import Layer, Query
from mmsearch.model_repository.search.layers.match import Match
from mmsearch.model_repository.search.layers.qp import Embedder, QueryProcessing
from mmsearch.model_repository.search.layers.rank import Rank
from mmsearch.model_repository.search.layers.summary import Summary

LAYER_TYPES: dict[str, type[Layer]] = {layer.name: layer for layer in (QueryProcessing, Match, Rank, Summary)}
assert tuple(LAYER_TYPES) == LAYERS, "the layer classes must follow the contract's order"

__all__ = ["LAYER_TYPES", "Embedder", "Layer", "Match", "Query", "QueryProcessing", "Rank", "Summary", "arm_validator"]


def arm_validator():
    """Checks an arm's params against its layer; used by parse_config."""

    def validate_arm(where: str, layer: str, arm: Arm) -> None:
        kind = LAYER_TYPES[layer]
        unknown = set(arm.params) - kind.params
        if unknown:
            raise ConfigError(f"{where}: unknown {layer} params {', '.join(sorted(unknown))} "
                              f"(known: {', '.join(sorted(kind.params))})")
        try:
            kind.check_arm(arm)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    return validate_arm
