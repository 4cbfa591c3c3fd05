"""Scenes, layers and A/B arms for the `search` model, read from a YAML file.

A scene is a collection plus the experiments run on it. Each retrieval layer (qp, match,
rank, summary) lists arms with a traffic ratio and their own parameters. A user lands in
an arm per layer by a salted SHA-256 of (salt, scene, layer, user id): the same user always
gets the same arm, and layers split independently of each other.

    salt: "2026-11"
    scenes:
      debian_faq:
        collection: debian_faq      # default: the scene's name
        layers:
          match:
            - {name: baseline, ratio: 0.5, params: {depth: 50}}
            - {name: deep, ratio: 0.5, params: {depth: 200}}
          rank:
            - {name: truncate, ratio: 0.5}
            - {name: mmr, ratio: 0.5, params: {lambda: 0.7}}

The config objects are immutable: a reload builds a new one and swaps one reference, so a
request that started on the old config finishes on it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import yaml

from mmsearch.errors import MmsearchError
from mmsearch.model_repository.contract import LAYERS

log = logging.getLogger(__name__)

RATIO_TOLERANCE = 1e-6
SETTLE_NS = 300_000_000  # a changed file is read once it has been left alone this long
ANONYMOUS_USER = ""  # requests without USER_ID all hash to the same, stable arms
BASELINE = "baseline"


class ConfigError(MmsearchError, ValueError):
    """The experiment config is invalid; the message names the place and the problem."""


@dataclass(frozen=True)
class Arm:
    name: str
    ratio: float
    params: Mapping = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Scene:
    name: str
    collection: str
    layers: Mapping[str, tuple[Arm, ...]]

    def arm(self, layer: str, name: str) -> Arm:
        for arm in self.layers[layer]:
            if arm.name == name:
                return arm
        known = ", ".join(a.name for a in self.layers[layer])
        raise ConfigError(f"scene '{self.name}' has no arm '{name}' in layer '{layer}' (arms: {known})")


@dataclass(frozen=True)
class ExperimentConfig:
    salt: str
    scenes: Mapping[str, Scene]

    def scene_for(self, collection: str) -> Scene:
        """The scene of a collection; collections without one get a baseline scene."""
        for scene in self.scenes.values():
            if scene.collection == collection:
                return scene
        return default_scene(collection)


def default_scene(collection: str) -> Scene:
    return Scene(collection, collection, MappingProxyType({layer: (Arm(BASELINE, 1.0),) for layer in LAYERS}))


EMPTY = ExperimentConfig(salt="mmsearch", scenes=MappingProxyType({}))


# --------------------------------------------------------------------------- parsing


def _arms(where: str, raw, validate_arm: Callable[[str, str, Arm], None] | None) -> tuple[Arm, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: expected a non-empty list of arms")
    arms, names = [], set()
    for i, entry in enumerate(raw):
        spot = f"{where}[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise ConfigError(f"{spot}: an arm needs a name")
        unknown = set(entry) - {"name", "ratio", "params"}
        if unknown:
            raise ConfigError(f"{spot}: unknown keys {', '.join(sorted(unknown))}")
        if entry["name"] in names:
            raise ConfigError(f"{spot}: arm name '{entry['name']}' is used twice")
        names.add(entry["name"])
        ratio = entry.get("ratio", 1.0 if len(raw) == 1 else None)
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio <= 1:
            raise ConfigError(f"{spot}: ratio must be a number between 0 and 1, got {ratio!r}")
        params = entry.get("params") or {}
        if not isinstance(params, dict):
            raise ConfigError(f"{spot}: params must be a mapping")
        arm = Arm(entry["name"], float(ratio), MappingProxyType(dict(params)))
        if validate_arm:
            validate_arm(spot, where.rsplit(".", 1)[-1], arm)
        arms.append(arm)
    total = sum(a.ratio for a in arms)
    if abs(total - 1.0) > RATIO_TOLERANCE:
        raise ConfigError(f"{where}: ratios sum to {total:g}, not 1")
    return tuple(arms)


def parse_config(text: str, validate_arm: Callable[[str, str, Arm], None] | None = None,
                 known_collections: set[str] | None = None) -> ExperimentConfig:
    """Parse and check a YAML config. `validate_arm(where, layer, arm)` checks arm params
    against what the server has (models, rankers); `known_collections` the scenes' targets."""
    if not text.strip():
        raise ConfigError("the config file is empty")
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a mapping with 'scenes'")
    unknown = set(raw) - {"salt", "scenes"}
    if unknown:
        raise ConfigError(f"unknown top-level keys: {', '.join(sorted(unknown))}")
    scenes_raw = raw.get("scenes") or {}
    if not isinstance(scenes_raw, dict):
        raise ConfigError("'scenes' must be a mapping of scene name -> scene")
    scenes, collections = {}, {}
    for name, body in scenes_raw.items():
        where = f"scenes.{name}"
        if not isinstance(body, dict):
            raise ConfigError(f"{where}: expected a mapping")
        unknown = set(body) - {"collection", "layers"}
        if unknown:
            raise ConfigError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        collection = str(body.get("collection") or name)
        if known_collections is not None and collection not in known_collections:
            raise ConfigError(f"{where}: unknown collection '{collection}'")
        if collection in collections:
            raise ConfigError(
                f"{where}: collection '{collection}' already belongs to scene '{collections[collection]}'"
            )
        collections[collection] = name
        layers_raw = body.get("layers") or {}
        if not isinstance(layers_raw, dict) or set(layers_raw) - set(LAYERS):
            raise ConfigError(f"{where}.layers: layers are {', '.join(LAYERS)}")
        layers = {
            layer: _arms(f"{where}.layers.{layer}", layers_raw[layer], validate_arm)
            if layer in layers_raw
            else (Arm(BASELINE, 1.0),)
            for layer in LAYERS
        }
        scenes[str(name)] = Scene(str(name), collection, MappingProxyType(layers))
    return ExperimentConfig(str(raw.get("salt", EMPTY.salt)), MappingProxyType(scenes))


# --------------------------------------------------------------------------- assignment


def bucket(salt: str, scene: str, layer: str, user_id: str) -> float:
    """A uniform number in [0, 1) fixed by (salt, scene, layer, user)."""
    digest = hashlib.sha256(f"{salt}\x1f{scene}\x1f{layer}\x1f{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(
    config: ExperimentConfig, scene: Scene, user_id: str | None, forced: Mapping[str, str] | None = None
) -> dict[str, Arm]:
    """The arm per layer for this user; `forced` (layer -> arm name) overrides, for debugging."""
    forced = forced or {}
    unknown = set(forced) - set(LAYERS)
    if unknown:
        raise ConfigError(f"cannot force unknown layers {', '.join(sorted(unknown))} (layers: {', '.join(LAYERS)})")
    chosen = {}
    for layer in LAYERS:
        if layer in forced:
            chosen[layer] = scene.arm(layer, forced[layer])
            continue
        point, cumulative = bucket(config.salt, scene.name, layer, user_id or ANONYMOUS_USER), 0.0
        arms = scene.layers[layer]
        chosen[layer] = arms[-1]  # float rounding can leave the point just above the last cumulative sum
        for arm in arms:
            cumulative += arm.ratio
            if point < cumulative:
                chosen[layer] = arm
                break
    return chosen


# --------------------------------------------------------------------------- hot reload


class ConfigWatcher:
    """The current config of a file, re-read when it changes; a broken edit keeps the last good one.

    The file is checked every `interval_s`, by a background poller (`background=True`, as
    the search model uses it) or else by `current()` itself, so an edit takes effect within
    about that long, without restarting Triton.
    """

    def __init__(
        self,
        path: str | os.PathLike | None,
        parse: Callable[[str], ExperimentConfig],
        interval_s: float = 1.0,
        background: bool = False,
    ):
        self.path = Path(path) if path else None
        self.background = bool(self.path and background)
        self.parse = parse
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._config = EMPTY
        self._stamp: tuple | None = None
        self._checked = 0.0
        self.last_error: str | None = None
        if self.path:
            self._reload(force=True)
        if self.background:
            # Each Triton instance has its own watcher; polling without waiting for requests
            # makes every instance see every settled version, so a broken edit cannot leave
            # an idle instance on an older "last good" config than its busy twin.
            threading.Thread(target=self._poll, name="experiment-config", daemon=True).start()

    def _poll(self) -> None:
        while True:
            time.sleep(self.interval_s)
            self._reload()

    def current(self) -> ExperimentConfig:
        # With a poller, requests never stat the file: the hot path only reads a reference.
        if self.path and not self.background and time.monotonic() - self._checked >= self.interval_s:
            self._reload()
        return self._config

    def _reload(self, force: bool = False) -> None:
        with self._lock:
            self._checked = time.monotonic()
            try:
                stat = self.path.stat()
                stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            except OSError as exc:
                stamp = ("unreadable", exc.strerror)  # constant while missing: reported once
            if stamp == self._stamp and not force:
                return
            if not force and isinstance(stamp[0], int) and time.time_ns() - stamp[0] < SETTLE_NS:
                return  # still being written (editors and `>` truncate first): look again shortly
            self._stamp = stamp
            try:
                config = self.parse(self.path.read_text(encoding="utf-8"))
            except (ConfigError, OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else exc
                self.last_error = f"experiment config {self.path} rejected, the last good one keeps serving: {reason}"
                log.error(self.last_error)
                return
            self._config, self.last_error = config, None
            log.warning("experiment config %s loaded: %d scenes", self.path, len(config.scenes))
