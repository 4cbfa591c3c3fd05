"""Index a JSON-lines corpus: embed through Triton's `text_embed`, write Milvus and the document store.

Documents are embedded by the same ensemble that embeds queries, so the two can never
drift apart. Every line is accounted for: written, skipped with its line number and
reason, or replaced by a later line with the same id.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from mmsearch.stores import MAX_ID_LENGTH, DocumentStore, VectorStore

ON_ERROR = ("skip", "fail")


class IndexingError(ValueError):
    """The run cannot go on (a bad line under --on-error fail, an unreadable file...)."""


@dataclass(frozen=True)
class IndexOptions:
    collection: str
    text_field: str = "text"
    id_field: str = "id"
    batch_size: int = 32
    concurrency: int = 4
    on_error: str = "skip"
    recreate: bool = False
    index_type: str = "FLAT"
    embed_model: str = "text_embed"


@dataclass
class IndexReport:
    collection: str
    lines: int = 0
    written: int = 0
    duplicates: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)
    collection_size: int = 0
    documents_stored: int = 0
    seconds: float = 0.0

    @property
    def docs_per_s(self) -> float:
        return self.written / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        return (
            f"indexed {self.written} documents into '{self.collection}' in {self.seconds:.1f} s "
            f"({self.docs_per_s:.1f} docs/s); {len(self.skipped)} lines skipped, {self.duplicates} duplicate ids replaced; "
            f"collection now holds {self.collection_size} vectors and {self.documents_stored} documents"
        )


def parse_line(line: str, id_field: str, text_field: str) -> dict:
    """One JSON-lines record as a document with a string `id`; ValueError says what is wrong."""
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise ValueError(f"invalid JSON ({exc.msg})") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    doc_id = record.get(id_field)
    if doc_id is None or (isinstance(doc_id, str) and not doc_id.strip()) or isinstance(doc_id, (dict, list, bool)):
        raise ValueError(f"missing id field '{id_field}'")
    doc_id = str(doc_id)
    if len(doc_id.encode("utf-8")) > MAX_ID_LENGTH:
        raise ValueError(f"id longer than {MAX_ID_LENGTH} bytes")
    text = record.get(text_field)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"missing or empty text field '{text_field}'")
    return {**record, "id": doc_id}


def read_corpus(path: Path, options: IndexOptions, report: IndexReport) -> list[dict]:
    """All valid documents, last occurrence of an id winning; bad lines go into the report."""
    documents: dict[str, dict] = {}
    try:
        handle = open(path, encoding="utf-8")
    except OSError as exc:
        raise IndexingError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            report.lines += 1
            try:
                doc = parse_line(line, options.id_field, options.text_field)
            except ValueError as exc:
                if options.on_error == "fail":
                    raise IndexingError(f"{path}:{number}: {exc}") from None
                report.skipped.append((number, str(exc)))
                continue
            if doc["id"] in documents:
                report.duplicates += 1
                del documents[doc["id"]]  # re-insert so the order follows the winning line
            documents[doc["id"]] = doc
    return list(documents.values())


def batches(items: Sequence, size: int) -> list[Sequence]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def index_documents(
    documents: Sequence[dict],
    embed: Callable[[list[str]], np.ndarray],
    embedding_dim: int,
    vectors: VectorStore,
    store: DocumentStore,
    options: IndexOptions,
    report: IndexReport,
    progress: bool = True,
) -> IndexReport:
    """Embed in batches (several in flight), then write each batch to both stores."""
    started = time.perf_counter()
    if options.recreate:
        vectors.drop(options.collection)
        store.drop(options.collection)
    metadata = {"modality": "text", "embed_model": options.embed_model, "text_field": options.text_field}
    vectors.ensure_collection(options.collection, embedding_dim, metadata, options.index_type)

    def embed_batch(batch: Sequence[dict]) -> tuple[Sequence[dict], np.ndarray]:
        return batch, embed([doc[options.text_field] for doc in batch])

    bar = tqdm(total=len(documents), unit="doc", desc=f"index {options.collection}", disable=not progress)
    with ThreadPoolExecutor(max_workers=max(1, options.concurrency)) as pool:
        # map() keeps input order and at most `concurrency` batches are embedding at once;
        # the writes stay on this thread, so the stores see one writer.
        for batch, embedded in pool.map(embed_batch, batches(documents, options.batch_size)):
            ids = [doc["id"] for doc in batch]
            vectors.upsert(options.collection, ids, embedded, batch, skip={options.text_field})
            store.upsert(options.collection, batch)
            report.written += len(batch)
            bar.update(len(batch))
    bar.close()
    vectors.flush(options.collection)
    report.collection_size = vectors.count(options.collection)
    report.documents_stored = store.count(options.collection)
    report.seconds = time.perf_counter() - started
    return report
