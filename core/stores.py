"""The two stores behind a collection: vectors in Milvus, whole documents in a document store.

Milvus keeps id + vector + small scalar fields (for filters); the document store keeps
each document as the user gave it. Both are keyed by the same string id, and writes are
upserts, so indexing the same input twice leaves the same collection.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from typing import NamedTuple, Protocol

import numpy as np

from mmsearch.errors import MmsearchError
from mmsearch.model_repository.contract import INT64_MAX, INT64_MIN, CollectionInfo
from mmsearch.settings import LiteServerDown, StoreSettings

FETCH_CHUNK = 100  # `$in` over 1,000 ids is ~6x slower than ten chunks of 100 on the wire server
MAX_ID_LENGTH = 512
MAX_SCALAR_LENGTH = 256  # longer strings stay in the document store only
# The collection property (not the schema description, which Milvus Lite drops) that holds
# the CollectionInfo the indexer recorded.
INFO_PROPERTY = "mmsearch.collection"
# Milvus's own default. Strong makes every read wait for the next time tick (about 200 ms on a
# server, milvus-io/milvus#9618); reads that must see a write just made ask for it.
DEFAULT_CONSISTENCY = "Bounded"
CONSISTENCY_LEVELS = ("Strong", "Bounded", "Session", "Eventually")
# Milvus Lite scans every vector per search and builds each hit in Python. Measured through
# `search` (mmsearch bench --scale N --store lite, 384-d, FLAT, 2 cores), p50 at concurrency 1:
# 35 ms at 20,000 vectors, 135 ms at 100,000, 287 ms at 200,000, 646 ms at 400,000. Past this
# size a search takes over LITE_SLOW_MS, and a Milvus server is the way on.
LITE_USABLE_VECTORS = 100_000
LITE_SLOW_MS = 100
# Build parameters per index type; searches pass their own (nprobe, ef) as match search_params.
INDEX_BUILD_PARAMS = {"HNSW": {"M": 16, "efConstruction": 200}, "IVF_FLAT": {"nlist": 1024}}


class Hit(NamedTuple):
    id: str
    score: float  # inner product of unit vectors: cosine similarity
    vector: np.ndarray | None = None


class StoreError(MmsearchError):
    """A store failed an operation."""


class StoreUnavailable(StoreError):
    """A store could not be reached (down, restarting, timing out): worth reconnecting and retrying."""


class StoreRejected(StoreError):
    """A store that is up refused the operation as invalid (a filter Milvus cannot run, a value
    it cannot hold): the connection is fine, the request is not."""


# pymilvus reports a dead server with its generic MilvusException; only the message tells.
# The last three: a Milvus server back from a crash still routes to the sessions of its dead
# components (for up to a minute) until their leases expire.
UNREACHABLE = re.compile(r"connect|unavailable|deadline|timed? ?out|closed channel|node not (found|match)|"
                         r"session not found", re.IGNORECASE)
FLUSH_RETRY_S = 90


def milvus_failure(exc: BaseException) -> type[StoreError]:
    import grpc
    from pymilvus.exceptions import ConnectError, ConnectionNotExistException, MilvusUnavailableException

    if isinstance(exc, (OSError, ConnectError, ConnectionNotExistException, MilvusUnavailableException)):
        return StoreUnavailable
    if isinstance(exc, grpc.RpcError):
        return StoreRejected if exc.code() == grpc.StatusCode.INVALID_ARGUMENT else StoreUnavailable
    return StoreUnavailable if UNREACHABLE.search(str(exc)) else StoreRejected


class UnknownCollection(MmsearchError, LookupError):
    def __init__(self, name: str, known: Sequence[str]):
        listed = ", ".join(sorted(known)) or "none"
        super().__init__(f"unknown collection '{name}' (collections: {listed})")
        self.name = name


def chunked(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --------------------------------------------------------------------------- vectors


def scalar_fields(document: dict, skip: set[str]) -> dict:
    """Small scalar fields worth filtering on; long text stays in the document store."""
    fields = {}
    for key, value in document.items():
        if key in skip or key.startswith("$"):
            continue
        if isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) <= MAX_SCALAR_LENGTH):
            fields[key] = value
    return fields


def check_storable(document: dict) -> None:
    """ValueError naming the field if a value no store can hold is anywhere in the document:
    an integer beyond 64 bits, NaN or an infinity (neither is JSON)."""
    def walk(value, where: str) -> None:
        if isinstance(value, bool):
            return
        if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
            raise ValueError(f"field '{where}': integer {value} does not fit in 64 bits")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"field '{where}': {value} is not a finite number")
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, item in items:
            walk(item, f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}" if where else key)

    try:
        walk(document, "")
    except RecursionError:
        raise ValueError("document nested too deeply") from None


def _vendor_errors() -> tuple[type[BaseException], ...]:
    import grpc
    from pymilvus.exceptions import MilvusException

    return MilvusException, grpc.RpcError, OSError


class VectorStore:
    """Milvus through pymilvus' MilvusClient: Milvus Lite (a path) or a server (a URL).

    Every call goes through `_call`, so what pymilvus or gRPC raise reaches callers as a
    StoreError that names the store and the operation.
    """

    def __init__(self, uri: str, timeout: float = 10.0):
        from pymilvus import MilvusClient

        # pymilvus logs every failed call with its traceback (150 lines for one dead server);
        # each failure reaches the caller as a StoreError with the reason, so the log only repeats it.
        for logger in ("pymilvus", "pymilvus.milvus_client"):
            logging.getLogger(logger).setLevel(logging.CRITICAL)
        try:
            self.client = MilvusClient(uri=uri, timeout=timeout)
        except Exception as exc:  # pymilvus raises several types for "cannot connect"
            raise StoreUnavailable(f"cannot connect to Milvus at {uri}: {exc}") from exc
        self.uri = uri
        self._loaded: set[str] = set()

    @classmethod
    def open(cls, settings: StoreSettings) -> VectorStore:
        try:
            return cls(settings.connect_uri())
        except LiteServerDown as exc:
            raise StoreUnavailable(str(exc)) from None

    def _call(self, action: str, fn, retry_s: float = 0.0):
        """fn(); a vendor error becomes a StoreError. With `retry_s`, an unavailable store is
        tried again for that long (for idempotent calls only)."""
        deadline = time.monotonic() + retry_s
        while True:
            try:
                return fn()
            except _vendor_errors() as exc:
                failure = milvus_failure(exc)
                if failure is StoreUnavailable and time.monotonic() < deadline:
                    time.sleep(1.0)
                    continue
                verb = "refused to" if failure is StoreRejected else "failed to"
                raise failure(f"Milvus at {self.uri} {verb} {action}: {exc.__class__.__name__}: {exc}") from exc

    def close(self) -> None:
        # An idle client's keepalive pings make Milvus Lite's server send GOAWAY noise.
        self._call("close", self.client.close)

    def collections(self) -> list[str]:
        return list(self._call("list collections", self.client.list_collections))

    def has(self, name: str) -> bool:
        return bool(self._call("look up a collection", lambda: self.client.has_collection(name)))

    def require(self, name: str) -> None:
        if not self.has(name):
            raise UnknownCollection(name, self.collections())

    def describe(self, name: str) -> tuple[str, CollectionInfo]:
        """The collection behind `name` (the one an alias points to, or `name` itself) and what the
        indexer recorded on it (modality, dim, text field, models, fields): one Milvus call."""
        self.require(name)
        described = self._call("describe a collection", lambda: self.client.describe_collection(name))
        info = CollectionInfo.from_json(described.get("properties", {}).get(INFO_PROPERTY))
        return str(described.get("collection_name") or name), info

    def info(self, name: str) -> CollectionInfo:
        return self.describe(name)[1]

    def physical(self, name: str) -> str:
        return self.describe(name)[0]

    def aliases(self) -> dict[str, str]:
        """Every alias and the collection it points to."""
        return {alias: name for name in self.collections()
                for alias in self._call("list aliases", lambda name=name: self.client.list_aliases(name))["aliases"]}

    def point_alias(self, alias: str, name: str) -> None:
        """Make `alias` name collection `name`: created, or switched in one step (searches see the
        old collection or the new one, never neither)."""
        if alias in self.aliases():
            self._call("switch an alias", lambda: self.client.alter_alias(name, alias))
        else:
            self._call("create an alias", lambda: self.client.create_alias(name, alias))

    def record(self, name: str, info: CollectionInfo) -> None:
        properties = {INFO_PROPERTY: info.to_json()}
        self._call(
            "record collection info", lambda: self.client.alter_collection_properties(name, properties=properties)
        )

    def ensure_collection(self, name: str, info: CollectionInfo, index_type: str | None = "FLAT") -> None:
        if self.has(name):
            existing = self.info(name)
            if existing.dim not in (None, info.dim):
                raise StoreError(f"collection '{name}' holds {existing.dim}-d vectors, not {info.dim}-d: "
                                 "use another collection name or --recreate")
            return
        self._call("create a collection", lambda: self._create(name, info, index_type))

    def _create(self, name: str, info: CollectionInfo, index_type: str | None) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_ID_LENGTH)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=info.dim)
        self.client.create_collection(name, schema=schema, index_params=self._index_params(index_type),
                                      consistency_level=DEFAULT_CONSISTENCY, properties={INFO_PROPERTY: info.to_json()})

    def _index_params(self, index_type: str | None):
        """None: no index yet (a bulk load builds it after the inserts, see build_index)."""
        if index_type is None:
            return None
        index_params = self.client.prepare_index_params()
        params = INDEX_BUILD_PARAMS.get(index_type, {})
        index_params.add_index(field_name="vector", index_type=index_type, metric_type="IP", params=params)
        return index_params

    def build_index(self, name: str, index_type: str) -> None:
        """Replace the collection's vector index (released while it is rebuilt; load() again after)."""
        def rebuild() -> None:
            self.client.release_collection(name)
            if "vector" in self.client.list_indexes(name):
                self.client.drop_index(name, "vector")
            self.client.create_index(name, self._index_params(index_type))

        self._call("build an index", rebuild)
        self._loaded.discard(name)

    def index_progress(self, name: str) -> dict:
        """Milvus's own account of the vector index: total_rows, indexed_rows, pending_index_rows, state."""
        return self._call("describe the index", lambda: self.client.describe_index(name, "vector"))

    def compact(self, name: str) -> int:
        return self._call("compact", lambda: self.client.compact(name))

    def compaction_state(self, job: int) -> str:
        return self._call("read the compaction state", lambda: self.client.get_compaction_state(job))

    def drop(self, name: str) -> None:
        """Drop a collection (behind an alias: the alias and the collection it points to)."""
        if self.has(name):
            name = self.physical(name)
            for alias in self._call("list aliases", lambda: self.client.list_aliases(name))["aliases"]:
                self._call("drop an alias", lambda alias=alias: self.client.drop_alias(alias))
            self._call("drop a collection", lambda: self.client.drop_collection(name))
        self._loaded.discard(name)

    def add_fields(self, name: str, fields: set[str]) -> None:
        """Record scalar fields written to the collection: the fields filters may name."""
        info = self.info(name)
        if not fields <= set(info.fields or ()):
            self.record(name, info.with_fields(fields))

    def upsert(self, name: str, ids: Sequence[str], vectors: np.ndarray, documents: Sequence[dict], skip: set[str],
               fresh: bool = False) -> int:
        """`fresh`: the ids are new (a bulk load into an empty collection), so plain inserts
        leave no delete records for compaction to clean up."""
        rows = [
            {**scalar_fields(doc, skip | {"id", "vector"}), "id": doc_id, "vector": vector.tolist()}
            for doc_id, vector, doc in zip(ids, vectors, documents, strict=True)
        ]
        if fresh:
            return int(self._call("insert", lambda: self.client.insert(name, rows))["insert_count"])
        return int(self._call("upsert", lambda: self.client.upsert(name, rows))["upsert_count"])

    def flush(self, name: str) -> None:
        """Seal what was written. The last step of an index run: worth waiting for a server that
        is coming back rather than failing a run whose every row is written."""
        self._call("flush", lambda: self.client.flush(name), retry_s=FLUSH_RETRY_S)

    def load(self, name: str) -> None:
        """Collections come back released after a Milvus (Lite) restart; load once per client."""
        if name not in self._loaded:
            self._call("load a collection", lambda: self.client.load_collection(name))
            self._loaded.add(name)

    def count(self, name: str, consistency: str = DEFAULT_CONSISTENCY) -> int:
        """Rows in the collection. Strong waits until every write so far is visible, so a count
        under Strong is also the point after which every search sees them."""
        self.require(name)
        self.load(name)
        rows = self._call("count", lambda: self.client.query(name, filter="", output_fields=["count(*)"],
                                                             consistency_level=consistency))
        return int(rows[0]["count(*)"])

    def search(self, name: str, vector: np.ndarray, limit: int, **options) -> list[Hit]:
        return self.search_many(name, np.asarray(vector, dtype=np.float32)[None, :], limit, **options)[0]

    def search_many(self, name: str, vectors: np.ndarray, limit: int, filter: str = "",
                    search_params: dict | None = None, with_vectors: bool = False,
                    consistency: str = DEFAULT_CONSISTENCY) -> list[list[Hit]]:
        """One Milvus search for every row of `vectors` (nq = len(vectors)): hits best first per
        row, each list possibly shorter than `limit`. `filter` must be a canonical expression.
        Bounded reads what the server has (a few seconds stale at most); Strong first waits for
        the next time tick (up to ~200 ms on a server)."""
        self.load(name)
        results = self._call("search", lambda: self.client.search(
            name,
            data=np.asarray(vectors, dtype=np.float32).tolist(),
            limit=limit,
            filter=filter,
            output_fields=["vector"] if with_vectors else [],
            search_params={"metric_type": "IP", "params": search_params or {}},
            consistency_level=consistency,
        ))
        if not with_vectors:  # ids and distances as pymilvus parsed them, without a dict per hit
            return [[Hit(doc_id, float(score)) for doc_id, score in zip(row.ids, row.distances, strict=True)]
                    for row in results]
        return [[Hit(hit["id"], float(hit["distance"]), np.asarray(hit["entity"]["vector"], dtype=np.float32))
                 for hit in row] for row in results]


# --------------------------------------------------------------------------- documents


class DocumentStore(Protocol):
    def upsert(self, collection: str, documents: Sequence[dict]) -> int: ...
    def get_many(self, collection: str, ids: Sequence[str]) -> dict[str, dict]: ...
    def count(self, collection: str) -> int: ...
    def drop(self, collection: str) -> None: ...
    def close(self) -> None: ...


class SqliteDocumentStore:
    """The embedded default: a durable SQLite file (WAL, so the server reads while `index` writes)."""

    def __init__(self, path):
        self.path = str(path)
        self._local = threading.local()  # sqlite3 connections are per thread
        self._call("open", self._create_table)

    def _create_table(self) -> None:
        with self._connection() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS documents ("
                " collection TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL,"
                " PRIMARY KEY (collection, id))"
            )

    def _call(self, action: str, fn):
        try:
            return fn()
        except sqlite3.Error as exc:  # OperationalError: disk full, unreadable file, locked too long
            failure = StoreUnavailable if isinstance(exc, sqlite3.OperationalError) else StoreError
            raise failure(f"document store {self.path} failed to {action}: {exc.__class__.__name__}: {exc}") from exc

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = sqlite3.connect(self.path, timeout=30)
        return conn

    def upsert(self, collection: str, documents: Sequence[dict]) -> int:
        rows = [(collection, str(doc["id"]), json.dumps(doc, ensure_ascii=False)) for doc in documents]

        def write() -> None:
            with self._connection() as conn:
                conn.executemany("INSERT OR REPLACE INTO documents (collection, id, body) VALUES (?, ?, ?)", rows)

        self._call("write", write)
        return len(rows)

    def get_many(self, collection: str, ids: Sequence[str]) -> dict[str, dict]:
        def read() -> dict[str, dict]:
            found: dict[str, dict] = {}
            conn = self._connection()
            for chunk in chunked(list(ids), FETCH_CHUNK):
                marks = ",".join("?" * len(chunk))
                query = f"SELECT id, body FROM documents WHERE collection = ? AND id IN ({marks})"
                found.update((doc_id, json.loads(body)) for doc_id, body in conn.execute(query, (collection, *chunk)))
            return found

        return self._call("read", read)

    def count(self, collection: str) -> int:
        query = "SELECT COUNT(*) FROM documents WHERE collection = ?"
        return int(self._call("count", lambda: self._connection().execute(query, (collection,)).fetchone()[0]))

    def drop(self, collection: str) -> None:
        def delete() -> None:
            with self._connection() as conn:
                conn.execute("DELETE FROM documents WHERE collection = ?", (collection,))

        self._call("drop", delete)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


# MongoDB refuses `$`-prefixed field names in a replacement, so a re-index (an upsert) would
# fail on a document whose first write succeeded. Such keys are stored behind a fullwidth
# dollar sign; a key that starts with one gets a second, so reading back is exact.
KEY_ESCAPE = "\uff04"


def escape_keys(value, escape: bool = True):
    """The document with `$`-prefixed keys escaped for MongoDB (or, escape=False, restored)."""
    if isinstance(value, list):
        return [escape_keys(item, escape) for item in value]
    if not isinstance(value, dict):
        return value
    if escape:
        return {(KEY_ESCAPE + k if k.startswith(("$", KEY_ESCAPE)) else k): escape_keys(v) for k, v in value.items()}
    return {(k[1:] if k.startswith(KEY_ESCAPE) else k): escape_keys(v, False) for k, v in value.items()}


class MongoDocumentStore:
    """MongoDB (or any MongoDB-wire server): one MongoDB collection per search collection, `_id` = id."""

    def __init__(self, uri: str, database: str = "mmsearch", timeout_ms: int = 3000):
        import pymongo

        self.uri = uri
        self.client = self._call("connect", lambda: pymongo.MongoClient(
            uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms))
        self.db = self.client[database]

    def _call(self, action: str, fn):
        import pymongo.errors

        try:
            return fn()
        except pymongo.errors.PyMongoError as exc:
            failure = StoreUnavailable if isinstance(exc, pymongo.errors.ConnectionFailure) else StoreRejected
            raise failure(f"document store {self.uri} failed to {action}: {exc.__class__.__name__}: {exc}") from exc

    def upsert(self, collection: str, documents: Sequence[dict]) -> int:
        from pymongo import ReplaceOne

        ops = [ReplaceOne({"_id": str(doc["id"])}, {**escape_keys(doc), "_id": str(doc["id"])}, upsert=True)
               for doc in documents]
        if ops:
            self._call("write", lambda: self.db[collection].bulk_write(ops, ordered=False))
        return len(ops)

    def get_many(self, collection: str, ids: Sequence[str]) -> dict[str, dict]:
        def read() -> dict[str, dict]:
            found: dict[str, dict] = {}
            for chunk in chunked(list(ids), FETCH_CHUNK):
                for doc in self.db[collection].find({"_id": {"$in": list(chunk)}}):
                    doc.pop("_id", None)
                    found[str(doc["id"])] = escape_keys(doc, escape=False)
            return found

        return self._call("read", read)

    def count(self, collection: str) -> int:
        return int(self._call("count", lambda: self.db[collection].count_documents({})))

    def drop(self, collection: str) -> None:
        self._call("drop", lambda: self.db[collection].drop())

    def close(self) -> None:
        self.client.close()


def open_document_store(settings: StoreSettings) -> DocumentStore:
    if settings.mongo_uri:
        return MongoDocumentStore(settings.mongo_uri)
    settings.require_writable()
    return SqliteDocumentStore(settings.sqlite_path)


# --------------------------------------------------------------------------- Milvus Lite's size


def lite_size_warning(settings: StoreSettings, collection: str, size: int) -> str | None:
    """A warning when an embedded (Milvus Lite) collection is past the size where it stays usable."""
    if not settings.embedded_milvus or size <= LITE_USABLE_VECTORS:
        return None
    return (f"collection '{collection}' holds {size:,} vectors in Milvus Lite, which scans them in Python: past about "
            f"{LITE_USABLE_VECTORS:,} a search takes over {LITE_SLOW_MS} ms. Serve it from a Milvus server instead "
            "(--milvus-uri http://HOST:19530; README, Scaling out)")


def lite_size_warnings(settings: StoreSettings) -> list[str]:
    """The warnings for every collection of the embedded store (none for a Milvus server)."""
    if not settings.embedded_milvus:
        return []
    vectors = VectorStore.open(settings)
    try:
        named = {physical: alias for alias, physical in vectors.aliases().items()}  # the names users search
        sizes = {named.get(name, name): vectors.count(name) for name in vectors.collections()}
    finally:
        vectors.close()
    return [warning for name, size in sorted(sizes.items()) if (warning := lite_size_warning(settings, name, size))]
