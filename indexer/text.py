"""JSON-lines text corpora: one document per line, an id plus any fields."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from mmsearch.client.search_client import SearchClient
from mmsearch.indexer.pipeline import IndexingError, IndexOptions, IndexReport
from mmsearch.stores import MAX_ID_LENGTH

EMBED_MODEL = "text_embed"


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


def collection_metadata(options: IndexOptions) -> dict:
    return {"modality": "text", "text_field": options.text_field, "query_models": {"text": EMBED_MODEL}}


def text_embedder(client: SearchClient, options: IndexOptions):
    def embed_batch(batch: Sequence[dict]):
        return batch, client.embed_texts([doc[options.text_field] for doc in batch], EMBED_MODEL), []

    return embed_batch
