"""Where the stores live: one place that serve, index, search and the Triton models read.

Every setting has a CLI flag and an environment variable; `mmsearch serve` resolves
them once and hands them to Triton's python models through the same variables, so
the server and the indexer can never disagree about where the data is.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from mmsearch.errors import MmsearchError
from mmsearch.processes import pid_alive, port_is_open

ENV_MILVUS_URI = "MMSEARCH_MILVUS_URI"
ENV_MONGO_URI = "MMSEARCH_MONGO_URI"
ENV_DATA_DIR = "MMSEARCH_DATA_DIR"
ENV_URL = "MMSEARCH_URL"  # where clients (CLI, UI, indexer job) reach Triton: HOST:PORT
ENV_PROTOCOL = "MMSEARCH_PROTOCOL"  # grpc | http
ENV_EXPERIMENTS = "MMSEARCH_EXPERIMENTS"  # the search model's experiment config (YAML), hot-reloaded
DEFAULT_DATA_DIR = ".mmsearch"
# Written by `mmsearch serve` when it runs the embedded Milvus Lite as a server, so
# that a separate `mmsearch index` talks to that process instead of opening the same
# files a second time (Milvus Lite is single-process).
LITE_ENDPOINT_FILE = "milvus-lite.json"
LITE_RESTART_WAIT_S = 30.0  # how long a client waits for serve to restart its Milvus Lite server


class DataDirError(MmsearchError):
    """The data dir cannot be created or written."""


class LiteServerDown(MmsearchError):
    """The embedded database belongs to a running `mmsearch serve` whose Milvus Lite server is down."""


@dataclass(frozen=True)
class StoreSettings:
    data_dir: Path
    milvus_uri: str
    mongo_uri: str | None = None

    @classmethod
    def resolve(
        cls,
        data_dir: str | os.PathLike | None = None,
        milvus_uri: str | None = None,
        mongo_uri: str | None = None,
    ) -> StoreSettings:
        """Flags win over environment variables, which win over the embedded defaults."""
        data = Path(data_dir or os.environ.get(ENV_DATA_DIR) or DEFAULT_DATA_DIR).expanduser().resolve()
        milvus = milvus_uri or os.environ.get(ENV_MILVUS_URI) or str(data / "milvus.db")
        mongo = mongo_uri or os.environ.get(ENV_MONGO_URI) or None
        return cls(data_dir=data, milvus_uri=milvus, mongo_uri=mongo)

    @property
    def embedded_milvus(self) -> bool:
        return not self.milvus_uri.startswith(("http://", "https://", "tcp://", "grpc://"))

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "documents.sqlite"

    @property
    def lite_endpoint_file(self) -> Path:
        return self.data_dir / LITE_ENDPOINT_FILE

    def require_writable(self) -> None:
        """The data dir exists and takes writes (stores, logs, the Lite record), or a one-line error."""
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            probe = self.data_dir / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise DataDirError(f"data dir {self.data_dir} is not writable ({exc.strerror}): pass --data-dir "
                               f"(or {ENV_DATA_DIR}) a folder this user can write") from None

    def as_env(self, milvus_uri: str | None = None) -> dict[str, str]:
        env = {ENV_DATA_DIR: str(self.data_dir), ENV_MILVUS_URI: milvus_uri or self.milvus_uri}
        if self.mongo_uri:
            env[ENV_MONGO_URI] = self.mongo_uri
        return env

    def connect_uri(self) -> str:
        """The URI a client should use right now.

        For the embedded store this is the running Milvus Lite server of `mmsearch serve`
        when there is one, else the local path (opened in this process).
        """
        if not self.embedded_milvus:
            return self.milvus_uri
        endpoint = read_lite_endpoint(self.lite_endpoint_file)
        if endpoint and endpoint.get("path") == str(Path(self.milvus_uri).resolve()):
            owner_alive = pid_alive(endpoint.get("owner"))
            if lite_answers(endpoint, LITE_RESTART_WAIT_S if owner_alive else 0):
                return endpoint["uri"]
            if owner_alive:  # never a second writer on a database a serve owns
                raise LiteServerDown(
                    f"{self.milvus_uri} belongs to `mmsearch serve` (pid {endpoint['owner']}), whose Milvus Lite "
                    f"server did not answer within {LITE_RESTART_WAIT_S:.0f} s; see {self.data_dir}/logs/"
                    "milvus-lite.log, or stop that serve")
        Path(self.milvus_uri).parent.mkdir(parents=True, exist_ok=True)
        return self.milvus_uri


def read_lite_endpoint(path: Path) -> dict | None:
    """The endpoint record `serve` wrote, or None if there is none (or it is unreadable)."""
    try:
        endpoint = json.loads(path.read_text())
        endpoint["port"] = int(endpoint["port"])
        return endpoint if isinstance(endpoint.get("uri"), str) and isinstance(endpoint.get("host"), str) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def lite_answers(endpoint: dict, wait_s: float) -> bool:
    """Whether the recorded server listens, waiting up to `wait_s` for a restart."""
    deadline = time.monotonic() + wait_s
    while not port_is_open(endpoint["host"], endpoint["port"]):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)
    return True
