"""Where the stores live: one place that serve, index, search and the Triton models read.

Every setting has a CLI flag and an environment variable; `mmsearch serve` resolves
them once and hands them to Triton's python models through the same variables, so
the server and the indexer can never disagree about where the data is.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from mmsearch.processes import port_is_open

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
            return endpoint["uri"]
        Path(self.milvus_uri).parent.mkdir(parents=True, exist_ok=True)
        return self.milvus_uri


def read_lite_endpoint(path: Path) -> dict | None:
    """The endpoint record, or None if it is missing or its server is gone."""
    try:
        endpoint = json.loads(path.read_text())
        host, port = endpoint["host"], int(endpoint["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return endpoint if port_is_open(host, port) else None
