"""Collections users search are Milvus aliases over physical collections, each embedded by one
model and recording it. `index` builds a physical collection (a new one beside the live one when
the model changes), `rollout` switches the alias in one step, `--rollback` switches it back,
`collections` lists them and `drop` removes one that no alias uses: nothing is dropped otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

from mmsearch.errors import MmsearchError
from mmsearch.model_repository.contract import DOCUMENT_MODELS, collection_name_problem
from mmsearch.settings import StoreSettings
from mmsearch.stores import VectorStore


class CollectionError(MmsearchError):
    """A rollout, rollback or drop that would break what users search."""


@dataclass(frozen=True)
class Target:
    """Where an index run writes its vectors, and whether the alias moves there at the end."""

    physical: str
    model: str
    switch: bool  # point the alias at `physical` once every vector is written
    live: str = ""  # the collection the alias points to now, if any


def physical_name(alias: str, model: str) -> str:
    name = f"{alias}__{model}__{time.strftime('%Y%m%d%H%M%S')}"
    if problem := collection_name_problem(name):
        raise CollectionError(f"{problem} (built from the collection and model names: shorten them)")
    return name


class Collections:
    """The aliases and physical collections of one Milvus."""

    def __init__(self, vectors: VectorStore):
        self.vectors = vectors

    def plan_index(self, alias: str, modality: str, model: str | None, recreate: bool) -> Target:
        """A new name, or --recreate: a new physical collection and the alias on it. The live model:
        its collection, updated in place. Another model: a new collection beside the live one, for
        `rollout` to switch to once it is checked."""
        if model and modality != "text":
            raise CollectionError("--model names a text encoder: image collections are embedded by clip_image_embed")
        if recreate or not self.vectors.has(alias):
            model = model or DOCUMENT_MODELS[modality]
            unfinished = None if recreate else self.unfinished(alias, model)
            return Target(unfinished or physical_name(alias, model), model, switch=True)
        live, live_info = self.vectors.describe(alias)
        live_model = live_info.embedded_by
        model = model or live_model
        if live == alias:  # made before collections were aliases
            if model != live_model:
                raise CollectionError(f"'{alias}' was indexed before collections were aliases and cannot take a second "
                                      "model beside it: re-index it once with --recreate, then index the new model")
            return Target(alias, model, switch=False)
        if model == live_model:
            return Target(live, model, switch=False, live=live)
        return Target(self.unfinished(alias, model) or physical_name(alias, model), model, switch=False, live=live)

    def unfinished(self, alias: str, model: str) -> str | None:
        """The latest collection an earlier run built for this alias and model that no alias
        uses yet: a re-run finishes it (writes are upserts) instead of starting another."""
        serving = set(self.vectors.aliases().values())
        built = sorted(name for name in self.vectors.collections()
                       if name.startswith(f"{alias}__{model}__") and name not in serving)
        return built[-1] if built else None

    def live_alias(self, alias: str) -> str:
        """The physical collection behind `alias`, which must be an alias."""
        if not self.vectors.has(alias):
            known = ", ".join(sorted(self.vectors.aliases())) or "none"
            raise CollectionError(f"unknown collection '{alias}' (aliases: {known})")
        live = self.vectors.physical(alias)
        if live == alias:
            raise CollectionError(f"'{alias}' is a collection, not an alias (indexed before collections were aliases): "
                                  "re-index it once with --recreate")
        return live

    def rollout(self, alias: str, to: str) -> str:
        """Point `alias` at the physical collection `to`; searches switch with it, each one embedded
        by the model of the collection that answers it."""
        live = self.live_alias(alias)
        if not self.vectors.has(to) or self.vectors.physical(to) != to:
            raise CollectionError(f"'{to}' is not a physical collection (`mmsearch collections` lists them)")
        if to == live:
            raise CollectionError(f"'{alias}' already points to '{to}'")
        old, new = self.vectors.info(live), self.vectors.info(to)
        if (new.modality, new.dim) != (old.modality, old.dim):
            raise CollectionError(f"refused: '{alias}' serves {old.modality} documents as {old.dim}-d vectors and "
                                  f"'{to}' holds {new.modality} documents as {new.dim}-d vectors; a rollout switches "
                                  "between collections of one modality and dimension")
        self.vectors.record(to, replace(new, rolled_out_from=live))
        self.vectors.point_alias(alias, to)
        return (f"{alias}: {live} ({old.embedded_by}) -> {to} ({new.embedded_by}); undo with "
                f"`mmsearch rollout {alias} --rollback`")

    def rollback(self, alias: str) -> str:
        live = self.live_alias(alias)
        previous = self.vectors.info(live).rolled_out_from
        if not previous:
            raise CollectionError(f"'{alias}' -> '{live}' was not reached by a rollout: nothing to roll back to")
        if not self.vectors.has(previous):
            raise CollectionError(f"'{alias}' was rolled out from '{previous}', which has been dropped")
        self.vectors.point_alias(alias, previous)
        return f"{alias}: {live} -> {previous} (rolled back)"

    def list(self) -> list[dict]:
        """Every physical collection: the aliases on it, its model, modality, dimension and size."""
        aliases: dict[str, list[str]] = {}
        for alias, physical in self.vectors.aliases().items():
            aliases.setdefault(physical, []).append(alias)
        rows = []
        for name in sorted(self.vectors.collections()):
            info = self.vectors.info(name)
            rows.append({"collection": name, "aliases": sorted(aliases.get(name, [])), "model": info.embedded_by,
                         "modality": info.modality, "dim": info.dim, "vectors": self.vectors.count(name),
                         "rolled_out_from": info.rolled_out_from})
        return rows

    def drop(self, name: str) -> str:
        """Drop a physical collection no alias points to (documents stay: they belong to the alias)."""
        if not self.vectors.has(name):
            raise CollectionError(f"unknown collection '{name}'")
        if self.vectors.physical(name) != name:
            raise CollectionError(f"'{name}' is an alias: drop the physical collections (`mmsearch collections`)")
        serving = [alias for alias, physical in self.vectors.aliases().items() if physical == name]
        if serving:
            raise CollectionError(f"'{name}' is live behind {', '.join(serving)}: roll out another collection first")
        self.vectors.drop(name)
        return f"dropped {name}"


@contextmanager
def managed(settings: StoreSettings) -> Iterator[Collections]:
    vectors = VectorStore.open(settings)
    try:
        yield Collections(vectors)
    finally:
        vectors.close()
