"""JSON-lines text corpora: one document per line, an id plus any fields."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

from mmsearch.client.search_client import SearchClient
from mmsearch.indexer.pipeline import IndexingError, IndexOptions, IndexReport
from mmsearch.jsonl import JsonLinesError, parse_object, read_jsonl
from mmsearch.model_repository.contract import DOCUMENT_MODELS
from mmsearch.stores import MAX_ID_LENGTH, check_storable


def text_document(record: dict, id_field: str, text_field: str) -> dict:
    """A record as a document with a string `id`; ValueError says what is wrong. Ids are
    strings: 12345 and "12345" are the same document, the later line replacing the earlier."""
    check_storable(record)
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


def parse_line(line: str, id_field: str, text_field: str) -> dict:
    return text_document(parse_object(line), id_field, text_field)


def read_documents(path: Path, options: IndexOptions, report: IndexReport) -> list[dict]:
    """All valid documents, last occurrence of an id winning; bad lines go into the report."""
    parse = partial(text_document, id_field=options.id_field, text_field=options.text_field)
    try:
        read = read_jsonl(path, parse, on_error=options.on_error, key="id")
    except JsonLinesError as exc:
        raise IndexingError(str(exc)) from None
    report.absorb(read)
    return read.records


def embedder(client: SearchClient, options: IndexOptions):
    def embed_batch(batch: Sequence[dict]):
        texts = [doc[options.text_field] for doc in batch]
        return batch, client.embed_texts(texts, options.model or DOCUMENT_MODELS["text"]), []

    return embed_batch
