"""docker-compose.yml (and its Dockerfile) checked without Docker: against the Compose schema,
and each service against what the code reads: settings, CLI options, ports, mounts, images.

Each check returns a list of problems. The real file must give none; a copy broken on purpose
must give the problem it was broken with, so that no check passes by never looking.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
from pathlib import Path
from unittest import mock
from urllib.parse import urlsplit

import click
import jsonschema
import pytest
import yaml

from mmsearch import settings
from mmsearch.client.cli import cli

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((Path(__file__).parent / "compose" / "compose-spec.json").read_text())
SETTINGS = {value for name, value in vars(settings).items() if name.startswith("ENV_")}
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
ADDRESSES = {settings.ENV_MILVUS_URI: "milvus", settings.ENV_MONGO_URI: "mongo", settings.ENV_URL: "triton"}
PATHS = {settings.ENV_DATA_DIR, settings.ENV_EXPERIMENTS}  # must lie on a mount to be seen or kept
VARIABLE = re.compile(r"\$(?:(\$)|\{(\w+)(?:(:?[-?])([^}]*))?\}|(\w+))")
FROM = re.compile(r"^FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", re.IGNORECASE | re.MULTILINE)


def interpolate(value, env: dict[str, str]):
    """Compose's substitution: ${VAR}, ${VAR:-default}, ${VAR-default}, $VAR; $$ is a literal $."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match):
        dollar, name, operator, default, bare = match.groups()
        if dollar:
            return "$"
        name = name or bare
        if name in env and (env[name] or operator not in (":-", ":?")):
            return env[name]
        return default if operator in ("-", ":-") else ""

    return VARIABLE.sub(substitute, value)


def load(path: Path = ROOT / "docker-compose.yml") -> dict:
    return interpolate(yaml.safe_load(path.read_text()), {})  # no host variables: the defaults


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def mounts(service: dict) -> list[tuple[str, str, str]]:
    """(type, source, target) of each volume entry, short or long syntax."""
    found = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            found.append((entry["type"], entry.get("source", ""), entry["target"]))
            continue
        source, target = entry.split(":")[:2] if ":" in entry else ("", entry)
        found.append(("bind" if source.startswith((".", "/", "~")) else "volume", source, target))
    return found


def invocations(service: dict) -> list[tuple[list[str], bool]]:
    """The programs a service runs, as (argv, through_a_shell); `sh -c` scripts are split at
    && ; || | and their $VAR taken from the service's environment, as that shell would."""
    command = service.get("command") or []
    if isinstance(command, str):
        command = shlex.split(command)  # Compose splits a string command; no shell runs it
    if command[:1] not in (["sh"], ["bash"]) or command[1:2] != ["-c"]:
        return [(command, False)] if command else []
    env = environment(service)
    script = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), command[2])
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    runs, current = [], []
    for word in lexer:
        if word in ("&&", "||", ";", "|"):
            runs.append(current)
            current = []
        else:
            current.append(word)
    return [(run, True) for run in [*runs, current] if run]


def parse_mmsearch(args: list[str], env: dict[str, str]) -> None:
    """Parse `mmsearch ARGS` with the real CLI in the service's environment; raises click's errors.
    Paths are not checked for existence: they are paths in the container."""
    name, *rest = args
    command = cli.get_command(click.Context(cli), name)
    if command is None:
        raise click.UsageError(f"no such command {name!r}")
    command = copy.copy(command)
    command.params = [copy.copy(p) for p in command.params]
    for param in command.params:
        if isinstance(param.type, click.Path) and param.type.exists:
            param.type = copy.copy(param.type)
            param.type.exists = False
    with mock.patch.dict(os.environ, env, clear=True):
        command.make_context(name, rest)


def address(value: str) -> tuple[str | None, int | None]:
    parts = urlsplit(value if "://" in value else f"//{value}")
    return parts.hostname, parts.port


def expected_port(var: str, env: dict[str, str]) -> int | None:
    if var == settings.ENV_URL:
        return {"grpc": 8001, "http": 8000}.get(env.get(settings.ENV_PROTOCOL, "grpc"))
    return {settings.ENV_MILVUS_URI: 19530, settings.ENV_MONGO_URI: 27017}[var]


def under(path: str, targets) -> bool:
    return any(path == t or path.startswith(t.rstrip("/") + "/") for t in targets)


# ------------------------------------------------------------------ checks


def schema_problems(compose: dict) -> list[str]:
    errors = jsonschema.Draft7Validator(SCHEMA).iter_errors(compose)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors]


def settings_problems(compose: dict) -> list[str]:
    problems = []
    services = compose["services"]
    for name, service in services.items():
        env = environment(service)
        targets = [target for _, _, target in mounts(service)]
        for var, value in env.items():
            if var.startswith("MMSEARCH_") and var not in SETTINGS:
                problems.append(f"{name}: {var} is not a setting the code reads ({sorted(SETTINGS)})")
            elif var in ADDRESSES:
                host, port = address(value)
                want = (ADDRESSES[var], expected_port(var, env))
                if host not in services:
                    problems.append(f"{name}: {var}={value} names no service of this file")
                elif (host, port) != want:
                    problems.append(f"{name}: {var}={value} should point at {want[0]}:{want[1]}")
            elif var in PATHS and value and not under(value, targets):
                problems.append(f"{name}: {var}={value} is not inside a mounted volume")
    return problems


def command_problems(compose: dict) -> list[str]:
    problems = []
    for name, service in compose["services"].items():
        env = environment(service)
        targets = {target.rstrip("/") for _, _, target in mounts(service)}
        for argv, shell in invocations(service):
            if not shell and any("$" in word for word in argv):
                problems.append(f"{name}: {shlex.join(argv)}: no shell expands $ in this command")
            if argv[0] == "tritonserver":
                flags = [w.partition("=")[2] for w in argv if w.startswith("--model-repository=")]
                if not flags or flags[0].rstrip("/") not in targets:
                    problems.append(
                        f"{name}: --model-repository {flags} is not where a volume is mounted {sorted(targets)}"
                    )
            elif argv[0] == "mmsearch":
                try:
                    parse_mmsearch(argv[1:], env)
                except click.ClickException as exc:
                    problems.append(f"{name}: {shlex.join(argv)}: {exc.format_message()}")
    return problems


def health_problems(compose: dict) -> list[str]:
    problems = []
    services = compose["services"]
    for name, service in services.items():
        check = service.get("healthcheck") or {}
        if not service.get("profiles") and (
            not check.get("test") or check.get("disable") or check["test"] in ("NONE", ["NONE"])
        ):
            problems.append(f"{name}: long-running service without a healthcheck")
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {dep: {} for dep in depends}
        for dep, how in depends.items():
            if dep not in services:
                problems.append(f"{name}: depends on {dep}, which is not a service of this file")
            elif how.get("condition") != "service_healthy":
                problems.append(f"{name}: depends on {dep} without condition: service_healthy")
    return problems


def volume_problems(compose: dict) -> list[str]:
    problems = []
    declared, used = set(compose.get("volumes") or {}), set()
    for name, service in compose["services"].items():
        found = mounts(service)
        for kind, source, target in found:
            if kind == "volume":
                used.add(source)
                if source not in declared:
                    problems.append(f"{name}: {target} is not on a named volume declared under volumes: ({source!r})")
            elif kind == "bind" and not (ROOT / source).resolve().is_relative_to(ROOT):
                problems.append(f"{name}: bind mount {source} is outside the checkout")
        if "build" not in service and not any(kind == "volume" for kind, _, _ in found):
            problems.append(f"{name}: a published image (a store) keeps its data on no named volume")
    problems += [f"volume {volume} is declared but no service mounts it" for volume in sorted(declared - used)]
    return problems


def pinned(image: str) -> bool:
    name, _, digest = image.partition("@")
    tail = name.rsplit("/", 1)[-1]
    return bool(digest) or (":" in tail and not tail.endswith(":latest"))


def image_problems(compose: dict) -> list[str]:
    problems, runs = [], {}
    for name, service in compose["services"].items():
        build = service.get("build")
        if build is None:
            runs[name] = image = service.get("image") or ""
            if not pinned(image):
                problems.append(f"{name}: image {image!r} is not pinned to a tag other than latest")
            continue
        build = build if isinstance(build, dict) else {"context": build}
        dockerfile = ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
        stages, bases = {}, []
        for base, alias in FROM.findall(dockerfile.read_text()):
            if base not in stages:
                bases.append(base)
            stages[alias or str(len(stages))] = stages.get(base, base)
        target = build.get("target") or list(stages)[-1]
        runs[name] = stages.get(target, f"no stage {target!r} in {dockerfile.name}")
        problems += [
            f"{name}: {dockerfile.name} FROM {base} is not pinned to a tag other than latest"
            for base in bases
            if not pinned(base)
        ]
    if runs.get("triton") != TRITON_IMAGE:
        problems.append(f"triton: runs {runs.get('triton')!r}, not {TRITON_IMAGE} (Triton 2.51)")
    return problems


CHECKS = [schema_problems, settings_problems, command_problems, health_problems, volume_problems, image_problems]


# ------------------------------------------------------------------ tests


@pytest.fixture
def compose_file() -> Path:
    return ROOT / "docker-compose.yml"


@pytest.fixture
def compose(compose_file) -> dict:
    return load(compose_file)


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_compose_file_passes(compose, check):
    assert check(compose) == []


def test_stack_has_every_service(compose):
    assert {"etcd", "minio", "milvus", "mongo", "triton", "ui", "indexer"} <= set(compose["services"])
    assert compose["services"]["indexer"]["profiles"] == ["tools"]


def test_shell_commands_are_read_as_the_container_shell_runs_them(compose):
    indexer = compose["services"]["indexer"]
    indexer["environment"]["COLLECTION"] = "docs"
    script = "sh -c 'cd /input && mmsearch index --input x.jsonl --collection $$COLLECTION{}'"
    indexer["command"] = interpolate(script.format(""), {})
    assert invocations(indexer)[1] == (["mmsearch", "index", "--input", "x.jsonl", "--collection", "docs"], True)
    assert command_problems(compose) == []
    indexer["command"] = interpolate(script.format(" --top-k 3"), {})
    problems = command_problems(compose)
    assert len(problems) == 1 and problems[0].endswith("No such option '--top-k'."), problems


DELETE = object()
UI_COMMAND = ["mmsearch", "ui", "--host", "0.0.0.0"]
BROKEN = {
    "unknown key": (schema_problems, ("services", "triton", "shm_sizee"), "2gb", "'shm_sizee' does not match"),
    "ports not a list": (schema_problems, ("services", "mongo", "ports"), "27017:27017", "is not of type 'array'"),
    "unknown setting": (settings_problems, ("services", "triton", "environment", "MMSEARCH_MILVUS_URL"),
                        "http://milvus:19530", "MMSEARCH_MILVUS_URL is not a setting"),
    "milvus service missing": (settings_problems, ("services", "triton", "environment", "MMSEARCH_MILVUS_URI"),
                               "http://milvus-standalone:19530", "names no service"),
    "mongo wrong port": (settings_problems, ("services", "indexer", "environment", "MMSEARCH_MONGO_URI"),
                         "mongodb://mongo:27018", "should point at mongo:27017"),
    "triton http port over grpc": (settings_problems, ("services", "ui", "environment", "MMSEARCH_URL"), "triton:8000",
                                   "should point at triton:8001"),
    "experiments not mounted": (settings_problems, ("services", "triton", "environment", "MMSEARCH_EXPERIMENTS"),
                                "/config/search.yaml", "not inside a mounted volume"),
    "ui unknown option": (command_problems, ("services", "ui", "command"), UI_COMMAND, "No such option '--host'"),
    "ui bad protocol": (command_problems, ("services", "ui", "environment", "MMSEARCH_PROTOCOL"), "grpcs",
                        "'grpcs' is not one of"),
    "indexer no collection": (command_problems, ("services", "indexer", "command"),
                              ["mmsearch", "index", "--input", "/input/d.jsonl"], "Missing option '--collection'"),
    "no shell for $": (command_problems, ("services", "indexer", "command"),
                       "mmsearch index --input /input/$INPUT --collection d", "no shell expands $"),
    "repository not mounted": (command_problems, ("services", "triton", "command"),
                               ["tritonserver", "--model-repository=/repository"], "is not where a volume is mounted"),
    "no healthcheck": (health_problems, ("services", "mongo", "healthcheck"), DELETE,
                       "mongo: long-running service without a healthcheck"),
    "started, not healthy": (health_problems, ("services", "ui", "depends_on", "triton", "condition"),
                             "service_started", "ui: depends on triton without condition: service_healthy"),
    "undeclared volume": (volume_problems, ("volumes", "mongo-data"), DELETE, "not on a named volume declared"),
    "unused volume": (volume_problems, ("volumes", "spare"), None, "volume spare is declared but no service mounts it"),
    "bind outside checkout": (volume_problems, ("services", "ui", "volumes"), ["/srv/photos:/input:ro"],
                              "outside the checkout"),
    "store without volume": (volume_problems, ("services", "milvus", "volumes"), DELETE,
                             "milvus: a published image (a store) keeps"),
    "latest": (image_problems, ("services", "mongo", "image"), "mongo:latest", "'mongo:latest' is not pinned"),
    "untagged": (image_problems, ("services", "etcd", "image"), "quay.io/coreos/etcd", "is not pinned"),
    "triton from the app stage": (image_problems, ("services", "triton", "build", "target"), "app",
                                  f"not {TRITON_IMAGE}"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_copy_is_reported(compose, case):
    check, path, value, expected = BROKEN[case]
    *parents, key = path
    node = compose
    for part in parents:
        node = node[part]
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    problems = check(compose)
    assert any(expected in problem for problem in problems), problems


def test_unpinned_dockerfile_base_is_reported(compose, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM python AS app\nFROM app AS other\n")
    compose["services"]["ui"]["build"] = {"context": str(tmp_path), "target": "app"}
    assert image_problems(compose) == ["ui: Dockerfile FROM python is not pinned to a tag other than latest"]
