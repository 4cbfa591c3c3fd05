"""Image galleries: a folder of images (recursive) or JSON-lines with a path or URL per image.

Each image is decoded here before it is sent (so a corrupt file is reported by name
instead of failing a whole batch on the server) and embedded by `clip_image_embed`.
Documents keep id, path or URL, file name, width, height and the user's own fields.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

from mmsearch.client.search_client import ClientError, SearchClient
from mmsearch.indexer.pipeline import IndexingError, IndexOptions, IndexReport
from mmsearch.jsonl import JsonLinesError, read_jsonl
from mmsearch.model_repository.contract import DOCUMENT_MODELS, MAX_IMAGE_BYTES
from mmsearch.model_repository.image_preprocess.image_preprocessing import ImageDecodeError, decode_image
from mmsearch.stores import check_storable

EMBED_MODEL = DOCUMENT_MODELS["image"]
URL_TIMEOUT_S = 30


def source_of(doc: dict) -> str:
    return doc.get("url") or doc["path"]


def discover_folder(root: Path) -> list[dict]:
    """Every visible file under `root`; the ones that are not images are reported when read."""
    files = sorted(p for p in root.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
    return [{"id": p.relative_to(root).as_posix(), "path": str(p.resolve()), "file_name": p.name} for p in files]


def manifest_entry(record: dict, options: IndexOptions, base: Path) -> dict:
    """A manifest line's image: `path_field` holds a path (relative to the manifest) or an http(s) URL."""
    check_storable(record)
    location = record.get(options.path_field)
    if not isinstance(location, str) or not location.strip():
        raise ValueError(f"missing path field '{options.path_field}'")
    if location.startswith(("http://", "https://")):
        where = {"url": location, "file_name": location.rstrip("/").rsplit("/", 1)[-1]}
    else:
        local = (base / location).resolve()
        where = {"path": str(local), "file_name": local.name}
    return {**record, **where, "id": str(record.get(options.id_field) or location)}


def read_documents(input_path: Path, options: IndexOptions, report: IndexReport) -> list[dict]:
    """The images of a folder or a JSON-lines manifest; under --on-error fail, every image is
    checked before anything is written."""
    if input_path.is_dir():
        documents = discover_folder(input_path)
        report.lines = len(documents)
    else:
        try:
            read = read_jsonl(input_path, partial(manifest_entry, options=options, base=input_path.parent),
                              on_error=options.on_error, key="id")
        except JsonLinesError as exc:
            raise IndexingError(str(exc)) from None
        report.absorb(read)
        documents = read.records
    if options.on_error == "fail":
        check_all(documents, options.concurrency)
    return documents


def load_bytes(doc: dict) -> bytes:
    if doc.get("url"):
        with urllib.request.urlopen(doc["url"], timeout=URL_TIMEOUT_S) as response:
            data = response.read(MAX_IMAGE_BYTES + 1)
    else:
        with open(doc["path"], "rb") as handle:
            data = handle.read(MAX_IMAGE_BYTES + 1)
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageDecodeError(f"file is larger than {MAX_IMAGE_BYTES} bytes")
    return data


def load_image(doc: dict) -> tuple[dict, bytes]:
    """The document with its width and height, and the file's bytes; raises naming the problem."""
    try:
        data = load_bytes(doc)
        width, height = decode_image(data).size  # a full decode: truncated files fail here
    except ImageDecodeError:
        raise
    except OSError as exc:  # unreadable file, URL error, timeout
        raise ImageDecodeError(f"cannot read: {getattr(exc, 'reason', None) or exc.strerror or exc}") from None
    return {**doc, "width": width, "height": height}, data


def check_all(documents: Sequence[dict], concurrency: int) -> None:
    """For --on-error fail: find the first bad image before anything is written."""
    def check(doc):
        try:
            load_image(doc)
        except ImageDecodeError as exc:
            return f"{source_of(doc)}: {exc}"

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        problem = next((p for p in pool.map(check, documents) if p), None)
    if problem:
        raise IndexingError(problem)


def embedder(client: SearchClient, options: IndexOptions):
    def embed_batch(batch: Sequence[dict]):
        kept, payloads, failures = [], [], []
        for doc in batch:
            try:
                checked, data = load_image(doc)
            except ImageDecodeError as exc:
                failures.append((source_of(doc), str(exc)))
                continue
            kept.append(checked)
            payloads.append(data)
        if not kept:
            return [], np.zeros((0, 0), dtype=np.float32), failures
        try:
            return kept, client.embed_images(payloads, EMBED_MODEL), failures
        except ClientError:
            pass
        # The server refused the batch: embed one by one so only the bad image is dropped.
        good, vectors = [], []
        for doc, data in zip(kept, payloads, strict=True):
            try:
                vectors.append(client.embed_images([data], EMBED_MODEL)[0])
                good.append(doc)
            except ClientError as exc:
                failures.append((source_of(doc), str(exc)))
        return good, np.array(vectors, dtype=np.float32), failures

    return embed_batch
