"""The names and limits that the server, the indexer, the clients and the UI agree on.

Everything here is part of mmsearch's public contract (see DESIGN.md): the Triton model and
tensor names, the request limits, the default ports, and what a collection records about
itself. Change a value only together with everyone who relies on it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType


@dataclass(frozen=True)
class TextTower:
    """One text tower's three models: a tokenizer, an encoder and the ensemble of the two."""

    prefix: str

    @property
    def tokenizer(self) -> str:
        return f"{self.prefix}_tokenizer"

    @property
    def encoder(self) -> str:
        return f"{self.prefix}_encoder"

    @property
    def embed(self) -> str:
        return f"{self.prefix}_embed"


# --- Triton models
TEXT_TOWER = TextTower("text")  # text_tokenizer -> text_encoder = text_embed
CLIP_TEXT_TOWER = TextTower("clip_text")  # clip_text_tokenizer -> clip_text_encoder = clip_text_embed
IMAGE_PREPROCESS = "image_preprocess"
CLIP_IMAGE_ENCODER = "clip_image_encoder"
CLIP_IMAGE_EMBED = "clip_image_embed"  # image_preprocess -> clip_image_encoder
SEARCH = "search"

# --- tensors of the public models
TEXT = "TEXT"  # BYTES, the *_embed input for text
IMAGE = "IMAGE"  # BYTES, an encoded image file: the clip_image_embed input, and search's optional one
EMBEDDING = "EMBEDDING"  # FP32, L2-normalised: every *_embed's output
QUERY, COLLECTION, TOP_K, USER_ID, PARAMS, RESULT = "QUERY", "COLLECTION", "TOP_K", "USER_ID", "PARAMS", "RESULT"
# ... and inside the ensembles (names of the exported ONNX graphs)
INPUT_IDS, ATTENTION_MASK, PIXEL_VALUES, ENCODER_OUTPUT = "input_ids", "attention_mask", "pixel_values", "embedding"

# --- request limits
DEFAULT_TOP_K = 10
MAX_TOP_K = 100
MAX_QUERY_CHARS = 2048
MAX_IMAGE_BYTES = 32 * 1024 * 1024  # a query image, an indexed image and a page upload alike
# Decoded size: a small PNG can inflate to 49 Mpx and seconds of CPU, while CLIP sees 224 x 224.
# 24 Mpx still takes any phone photo or 5K screenshot.
MAX_IMAGE_PIXELS = 24_000_000
MAX_FILTER_CHARS, MAX_FILTER_DEPTH = 1000, 32  # nested not/parentheses; Milvus's parser recurses
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # the integers Milvus (and MongoDB) store

# A Milvus server's rule for collection names (Milvus Lite takes more, e.g. spaces, which a
# server then refuses): checked before anything is written, so a name works on both.
COLLECTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")


def collection_name_problem(name: str) -> str | None:
    """Why `name` cannot be a collection name, or None when it can."""
    if COLLECTION_NAME.fullmatch(name):
        return None
    return (f"collection name {name!r} is not valid: use 1-255 letters, digits and underscores, starting with "
            "a letter or underscore (Milvus's rule)")


# --- where things listen by default: this machine only; --host 0.0.0.0 exposes Triton on purpose
DEFAULT_HOST = "127.0.0.1"
DEFAULT_HTTP_PORT, DEFAULT_GRPC_PORT, DEFAULT_METRICS_PORT = 8000, 8001, 8002
DEFAULT_URL = f"localhost:{DEFAULT_GRPC_PORT}"  # clients speak gRPC unless told otherwise
DEFAULT_UI_PORT = 8501

# --- the retrieval layers of `search`, in the order they run; experiments split users per layer
LAYERS = ("qp", "match", "rank", "summary")

# --- collections
MODALITIES = ("text", "image")
# Which ensemble embeds the documents of a modality, and which embeds each kind of query.
DOCUMENT_MODELS = MappingProxyType({"text": TEXT_TOWER.embed, "image": CLIP_IMAGE_EMBED})
QUERY_MODELS = MappingProxyType({
    "text": MappingProxyType({"text": TEXT_TOWER.embed}),
    "image": MappingProxyType({"text": CLIP_TEXT_TOWER.embed, "image": CLIP_IMAGE_EMBED}),
})


@dataclass(frozen=True)
class CollectionInfo:
    """What the indexer records on a collection and the search model reads back.

    Stored as JSON in one Milvus collection property (Milvus Lite drops the schema
    description); `mmsearch.stores.VectorStore` is the only place that writes or reads it.
    """

    modality: str = "text"
    dim: int | None = None
    text_field: str = ""  # the field that was embedded (text collections)
    query_models: Mapping[str, str] = field(default_factory=dict)  # query kind -> *_embed model
    fields: tuple[str, ...] | None = None  # scalar fields filters may name; None: not recorded
    document_model: str = ""  # the *_embed model the documents went through; "": the modality's default
    rolled_out_from: str = ""  # the physical collection its alias pointed to before `rollout` moved it here

    @classmethod
    def for_index(cls, modality: str, dim: int, text_field: str = "", model: str | None = None) -> CollectionInfo:
        """A text collection embedded by `model` is searched by it too: queries and documents
        always go through the same encoder."""
        queries = {"text": model} if model and modality == "text" else dict(QUERY_MODELS[modality])
        return cls(modality, dim, text_field if modality == "text" else "", queries,
                   document_model=model or DOCUMENT_MODELS[modality])

    @property
    def embedded_by(self) -> str:
        return self.document_model or DOCUMENT_MODELS.get(self.modality, "")

    @property
    def queries(self) -> Mapping[str, str]:
        """Query kind -> model; collections from before query_models was recorded get the defaults."""
        return self.query_models or QUERY_MODELS.get(self.modality, {})

    def with_fields(self, fields: set[str]) -> CollectionInfo:
        return replace(self, fields=tuple(sorted(set(self.fields or ()) | fields)))

    def to_json(self) -> str:
        record = {"modality": self.modality, "text_field": self.text_field, "query_models": dict(self.query_models),
                  "dim": self.dim, "fields": list(self.fields) if self.fields is not None else None,
                  "document_model": self.document_model, "rolled_out_from": self.rolled_out_from}
        return json.dumps({key: value for key, value in record.items() if value not in (None, "", {})})

    @classmethod
    def from_json(cls, text: str | None) -> CollectionInfo:
        """Unreadable or missing records give the defaults, so an odd collection stays searchable."""
        try:
            record = json.loads(text or "{}")
        except ValueError:
            record = {}
        if not isinstance(record, dict):
            record = {}
        fields = record.get("fields")
        return cls(str(record.get("modality", "text")), record.get("dim"), str(record.get("text_field", "")),
                   dict(record.get("query_models") or {}), tuple(fields) if isinstance(fields, list) else None,
                   str(record.get("document_model", "")), str(record.get("rolled_out_from", "")))
