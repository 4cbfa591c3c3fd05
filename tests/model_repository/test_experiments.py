"""Experiment config: parsing and validation, the salted-hash traffic split, hot reload."""

import os
import time
from collections import Counter

import pytest

from mmsearch.model_repository.search.experiments import (
    EMPTY,
    LAYERS,
    ConfigError,
    ConfigWatcher,
    assign,
    bucket,
    parse_config,
)

CONFIG = """
salt: test-salt
scenes:
  faq:
    collection: debian_faq
    layers:
      match:
        - {name: baseline, ratio: 0.5, params: {depth: 50}}
        - {name: deep, ratio: 0.5, params: {depth: 200}}
      rank:
        - {name: truncate, ratio: 0.2}
        - {name: mmr, ratio: 0.3, params: {lambda: 0.7}}
        - {name: hybrid, ratio: 0.5}
"""
USERS = [f"user-{i}" for i in range(10_000)]


def test_parse_fills_missing_layers_with_a_baseline_arm():
    config = parse_config(CONFIG)
    scene = config.scene_for("debian_faq")
    assert scene.name == "faq" and [a.name for a in scene.layers["rank"]] == ["truncate", "mmr", "hybrid"]
    assert [a.name for a in scene.layers["qp"]] == ["baseline"] and scene.layers["match"][1].params["depth"] == 200
    assert config.scene_for("other").layers["rank"][0].name == "baseline"


def test_split_of_10000_users_is_within_2_points_of_the_ratios():
    config = parse_config(CONFIG)
    scene = config.scene_for("debian_faq")
    for layer, expected in {
        "match": {"baseline": 0.5, "deep": 0.5},
        "rank": {"truncate": 0.2, "mmr": 0.3, "hybrid": 0.5},
    }.items():
        counts = Counter(assign(config, scene, user)[layer].name for user in USERS)
        observed = {name: counts[name] / len(USERS) for name in expected}
        assert all(abs(observed[n] - expected[n]) <= 0.02 for n in expected), (layer, observed)


def test_a_user_keeps_their_arm_and_layers_split_independently():
    config = parse_config(CONFIG)
    scene = config.scene_for("debian_faq")
    first = {user: assign(config, scene, user) for user in USERS[:500]}
    reparsed = parse_config(CONFIG)  # as after a server restart: nothing but the config decides
    assert all(assign(reparsed, reparsed.scene_for("debian_faq"), u) == arms for u, arms in first.items())
    joint = Counter((assign(config, scene, u)["match"].name, assign(config, scene, u)["rank"].name) for u in USERS)
    # independent layers: P(deep and hybrid) ~ 0.5 * 0.5
    assert abs(joint[("deep", "hybrid")] / len(USERS) - 0.25) <= 0.02


def test_salt_reshuffles_users_and_missing_user_id_is_stable():
    assert bucket("a", "s", "rank", "u1") != bucket("b", "s", "rank", "u1")
    config = parse_config(CONFIG)
    scene = config.scene_for("debian_faq")
    assert assign(config, scene, None) == assign(config, scene, "")


def test_forced_arms_override_the_hash():
    config = parse_config(CONFIG)
    scene = config.scene_for("debian_faq")
    assert all(assign(config, scene, u, {"rank": "mmr"})["rank"].name == "mmr" for u in USERS[:100])
    with pytest.raises(ConfigError, match="no arm 'nope' in layer 'rank' \\(arms: truncate, mmr, hybrid\\)"):
        assign(config, scene, "u", {"rank": "nope"})
    with pytest.raises(ConfigError, match="cannot force unknown layers ranking"):
        assign(config, scene, "u", {"ranking": "mmr"})


@pytest.mark.parametrize(
    "text, message",
    [
        ("scenes: [oops", "not valid YAML"),
        ("- a list", "must be a mapping"),
        ("scenes: {s: {layers: {rank: [{name: a, ratio: 0.5}, {name: b, ratio: 0.4}]}}}", "ratios sum to 0.9, not 1"),
        ("scenes: {s: {layers: {rank: [{name: a, ratio: 0.5}, {name: a, ratio: 0.5}]}}}", "arm name 'a' is used twice"),
        ("scenes: {s: {layers: {ranking: [{name: a}]}}}", "layers are qp, match, rank, summary"),
        ("scenes: {s: {layers: {rank: [{ratio: 1}]}}}", "an arm needs a name"),
        ("scenes: {s: {layers: {rank: [{name: a, ratio: 2}]}}}", "ratio must be a number between 0 and 1"),
        ("scenes: {s: {collection: x}, t: {collection: x}}", "collection 'x' already belongs to scene 's'"),
        ("scenes: {s: {colection: x}}", "unknown keys colection"),
        ("salt: x\nextra: 1", "unknown top-level keys: extra"),
    ],
)
def test_invalid_configs_are_rejected_with_the_place_named(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(text)


def test_arm_and_collection_validators_are_applied():
    def no_mmr(where, layer, arm):
        if arm.name == "mmr":
            raise ConfigError(f"{where}: unknown ranker 'mmr'")

    with pytest.raises(ConfigError, match=r"scenes.faq.layers.rank\[1\]: unknown ranker 'mmr'"):
        parse_config(CONFIG, validate_arm=no_mmr)
    with pytest.raises(ConfigError, match="scenes.faq: unknown collection 'debian_faq'"):
        parse_config(CONFIG, known_collections={"other"})


def bump_mtime(path, seconds):
    """Give the file a distinct, settled modification time (seconds in the past)."""
    stamp = time.time() - 10 + seconds
    os.utime(path, (stamp, stamp))


def test_watcher_reloads_edits_and_keeps_the_last_good_config(tmp_path):
    path = tmp_path / "search.yaml"
    path.write_text(CONFIG)
    watcher = ConfigWatcher(path, parse_config, interval_s=0)
    assert "faq" in watcher.current().scenes
    path.write_text(CONFIG.replace("faq:", "faq2:"))
    bump_mtime(path, 1)
    assert "faq2" in watcher.current().scenes and watcher.last_error is None
    path.write_text("scenes: [broken")
    bump_mtime(path, 2)
    assert "faq2" in watcher.current().scenes
    assert "rejected, the last good one keeps serving: not valid YAML" in watcher.last_error
    path.write_text("")
    bump_mtime(path, 3)
    assert "faq2" in watcher.current().scenes and "the config file is empty" in watcher.last_error
    path.unlink()
    assert "faq2" in watcher.current().scenes and "No such file" in watcher.last_error


def test_watcher_waits_until_a_file_being_written_settles(tmp_path):
    path = tmp_path / "search.yaml"
    path.write_text(CONFIG)
    bump_mtime(path, 0)
    watcher = ConfigWatcher(path, parse_config, interval_s=0)
    path.write_text("scenes: {}")  # just written: mtime is now, within the settle time
    assert "faq" in watcher.current().scenes and watcher.last_error is None
    bump_mtime(path, 1)
    assert watcher.current().scenes == {}


def test_watcher_without_a_file_serves_baselines():
    assert ConfigWatcher(None, parse_config).current() is EMPTY
    assert set(EMPTY.scene_for("x").layers) == set(LAYERS)


def test_background_polling_picks_up_edits_without_requests(tmp_path):
    path = tmp_path / "search.yaml"
    path.write_text(CONFIG)
    watcher = ConfigWatcher(path, parse_config, interval_s=0.05, background=True)
    path.write_text(CONFIG.replace("faq:", "faq3:"))
    bump_mtime(path, 1)
    deadline = time.monotonic() + 5
    while "faq3" not in watcher._config.scenes and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "faq3" in watcher._config.scenes  # read by the poller, not by a call to current()
