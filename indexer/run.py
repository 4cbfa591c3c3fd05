"""`mmsearch index`: read the input, embed it through Triton, write Milvus and the document store."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from mmsearch.client.search_client import SearchClient
from mmsearch.indexer import images, text
from mmsearch.indexer.collections import Collections
from mmsearch.indexer.pipeline import IndexingError, IndexOptions, IndexReport, index_documents
from mmsearch.model_repository.contract import CollectionInfo, collection_name_problem
from mmsearch.settings import StoreSettings
from mmsearch.stores import VectorStore, lite_size_warning, open_document_store

# Each modality reads its input (read_documents) and embeds a batch (embedder) its own way.
READERS = {"text": text, "image": images}


def run_index(client: SearchClient, settings: StoreSettings, input_path: Path, options: IndexOptions,
              progress: bool = True) -> IndexReport:
    """Index `input_path` into `options.collection`; every input is written, or reported on
    stderr as skipped (with its line or file) or as a duplicate id."""
    if problem := collection_name_problem(options.collection):
        raise IndexingError(problem)
    modality = READERS[options.modality]
    report = IndexReport(options.collection)
    vectors, store = VectorStore.open(settings), open_document_store(settings)
    try:
        target = Collections(vectors).plan_index(options.collection, options.modality, options.model, options.recreate)
        options = replace(options, model=target.model, physical=target.physical, switch_alias=target.switch)
        documents = modality.read_documents(Path(input_path), options, report)
        info = CollectionInfo.for_index(options.modality, client.embedding_dim(target.model), options.text_field,
                                        target.model if options.modality == "text" else None)
        index_documents(documents, modality.embedder(client, options), info, vectors, store, options, report, progress)
    finally:
        store.close()
        vectors.close()
    if target.live and target.physical != target.live:
        report.notes.append(f"built {target.physical} ({target.model}) beside the live {target.live}; switch "
                            f"'{options.collection}' to it with `mmsearch rollout {options.collection} --to "
                            f"{target.physical}`")
    for where, reason in report.skipped:
        location = f"{input_path}:{where}" if isinstance(where, int) else where
        print(f"warning: {location}: {reason} (skipped)", file=sys.stderr)
    if warning := lite_size_warning(settings, options.collection, report.collection_size):
        print(f"warning: {warning}", file=sys.stderr)
    return report
