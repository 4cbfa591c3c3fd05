"""The indexing loop shared by text and images: embed batches through Triton, write both stores.

Documents are embedded by the same ensembles that embed queries, so the two can never
drift apart. Every input is accounted for: written, skipped with its line number or file
name and the reason, or replaced by a later one with the same id.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from mmsearch.errors import MmsearchError
from mmsearch.jsonl import JsonLines
from mmsearch.model_repository.contract import CollectionInfo
from mmsearch.stores import DocumentStore, StoreError, StoreRejected, VectorStore, scalar_fields


class IndexingError(MmsearchError):
    """The run cannot go on (a bad line under --on-error fail, an unreadable file...)."""


@dataclass(frozen=True)
class IndexOptions:
    collection: str
    modality: str = "text"
    text_field: str = "text"
    id_field: str = "id"
    path_field: str = "path"
    batch_size: int = 32
    concurrency: int = 4
    on_error: str = "skip"
    recreate: bool = False
    index_type: str = "FLAT"
    model: str | None = None  # text: the *_embed model [default: the live collection's, else text_embed]
    physical: str = ""  # the Milvus collection the vectors go to [default: `collection`]
    switch_alias: bool = False  # point the alias `collection` at `physical` once all is written

    @property
    def vectors_name(self) -> str:
        return self.physical or self.collection


@dataclass
class IndexReport:
    collection: str
    lines: int = 0
    written: int = 0
    duplicates: int = 0
    skipped: list[tuple[int | str, str]] = field(default_factory=list)  # (line number or file, reason)
    collection_size: int = 0
    documents_stored: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # what the user should know or do next

    def absorb(self, read: JsonLines) -> None:
        """Count what reading the input file found."""
        self.lines += read.lines
        self.skipped.extend(read.skipped)
        self.duplicates += read.duplicates

    @property
    def docs_per_s(self) -> float:
        return self.written / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        return (
            f"indexed {self.written} documents into '{self.collection}' in {self.seconds:.1f} s "
            f"({self.docs_per_s:.1f} docs/s); {len(self.skipped)} skipped, {self.duplicates} duplicate ids replaced; "
            f"collection now holds {self.collection_size} vectors and {self.documents_stored} documents"
        ) + "".join(f"\n{note}" for note in self.notes)


def batches(items: Sequence, size: int) -> list[Sequence]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# batch -> (documents kept, their vectors, [(file or line, reason)] for those dropped)
BatchEmbedder = Callable[[Sequence[dict]], tuple[Sequence[dict], np.ndarray, list[tuple[int | str, str]]]]


def write_batch(documents: Sequence[dict], embedded: np.ndarray, vectors: VectorStore, store: DocumentStore,
                options: IndexOptions) -> list[tuple[dict, str]]:
    """Write documents then vectors, so no vector is ever searchable without its document.
    Returns each document with "" or the reason a store refused it: one value a store cannot
    hold must not cost the batch's good documents, so a refused batch is retried one by one.
    StoreError (a store down, a disk full) is left to the caller."""
    def write(docs: Sequence[dict], rows: np.ndarray) -> None:
        store.upsert(options.collection, docs)
        vectors.upsert(options.vectors_name, [doc["id"] for doc in docs], rows, docs, skip={options.text_field})

    if not documents:
        return []
    try:
        write(documents, embedded)
        return [(doc, "") for doc in documents]
    except StoreRejected as exc:
        if len(documents) == 1:
            return [(documents[0], str(exc))]
    return [outcome for doc, row in zip(documents, embedded, strict=True)
            for outcome in write_batch([doc], row[None, :], vectors, store, options)]


def write_all(documents: Sequence[dict], embed_batch: BatchEmbedder, vectors: VectorStore, store: DocumentStore,
              options: IndexOptions, report: IndexReport, progress: bool) -> set[str]:
    """Embed in batches (several in flight) and write each; returns the scalar fields written."""
    skip = {options.text_field, "id", "vector"}
    fields: set[str] = set()
    with (tqdm(total=len(documents), unit="doc", desc=f"index {options.collection}", disable=not progress) as bar,
          ThreadPoolExecutor(max_workers=max(1, options.concurrency)) as pool):
        # map() keeps input order and at most `concurrency` batches are embedding at once;
        # the writes stay on this thread, so the stores see one writer.
        for kept, embedded, failures in pool.map(embed_batch, batches(documents, options.batch_size)):
            written = write_batch(kept, embedded, vectors, store, options)
            refused = [(f"id {doc['id']}", reason) for doc, reason in written if reason]
            report.written += len(written) - len(refused)
            if refused and options.on_error == "fail":
                raise IndexingError(f"{refused[0][0]}: {refused[0][1]} (--on-error fail; {report.written} "
                                    "documents written)")
            report.skipped.extend(failures + refused)
            fields.update(*(scalar_fields(doc, skip) for doc, reason in written if not reason))
            bar.update(len(written) + len(failures))
    return fields


def index_documents(
    documents: Sequence[dict],
    embed_batch: BatchEmbedder,
    info: CollectionInfo,
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
    vectors.ensure_collection(options.vectors_name, info, options.index_type)

    try:
        fields = write_all(documents, embed_batch, vectors, store, options, report, progress)
        vectors.flush(options.vectors_name)
        vectors.add_fields(options.vectors_name, fields)
        # Strong: returns once every write of this run is visible, so a search right after `index` sees them all.
        report.collection_size = vectors.count(options.vectors_name, consistency="Strong")
        report.documents_stored = store.count(options.collection)
        if options.switch_alias:
            vectors.point_alias(options.collection, options.vectors_name)
    except StoreError as exc:
        raise IndexingError(f"{exc}; stopped after writing {report.written} of {len(documents)} documents "
                            "(writes are upserts: run the same command again to finish)") from None
    report.seconds = time.perf_counter() - started
    return report
