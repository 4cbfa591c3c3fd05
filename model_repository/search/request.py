"""A `search` request as plain Python: decoded from the wire, checked against the limits."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from mmsearch.errors import MmsearchError
from mmsearch.model_repository.contract import MAX_IMAGE_BYTES, MAX_QUERY_CHARS, MAX_TOP_K

KNOWN_PARAMS = {"filter", "experiments", "debug", "catalog"}


# Whose fault a failed search is, so clients and load balancers can tell: the caller's (Triton
# INVALID_ARG, HTTP 400), a store that cannot be reached (UNAVAILABLE), or the server's (INTERNAL).
# (Triton 2.51's gRPC frontend reports all three as INTERNAL; see README.)
INVALID, UNAVAILABLE, INTERNAL = "invalid", "unavailable", "internal"


class SearchError(MmsearchError, ValueError):
    """A request the server cannot answer; the message goes back to the client as is."""

    def __init__(self, message: str, status: str = INVALID):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class SearchRequest:
    query: str
    collection: str
    top_k: int
    user_id: str = ""
    params: dict = field(default_factory=dict)
    image: bytes | None = None  # an encoded image file: an image -> image search

    @property
    def modality(self) -> str:
        return "image" if self.image is not None else "text"

    @property
    def is_catalog(self) -> bool:
        """Asks what can be searched, not a search."""
        return self.params.get("catalog") is True

    @classmethod
    def from_wire(cls, query, collection, top_k, user_id=b"", params=b"", image=None) -> SearchRequest:
        def text(value) -> str:
            return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value or "")

        raw_params = text(params).strip()
        try:
            parsed = json.loads(raw_params) if raw_params else {}
        except ValueError as exc:
            raise SearchError(f"PARAMS is not valid JSON: {exc}") from None
        except RecursionError:
            raise SearchError("PARAMS is nested too deeply to be a search's parameters") from None
        if not isinstance(parsed, dict):
            raise SearchError("PARAMS must be a JSON object")
        return cls(text(query), text(collection).strip(), int(top_k), text(user_id), parsed, image)

    def validate(self, max_top_k: int = MAX_TOP_K, max_query_chars: int = MAX_QUERY_CHARS) -> None:
        if self.image is not None:
            if self.query.strip():
                raise SearchError("send QUERY or IMAGE, not both: a search is by text or by image")
            if not self.image:
                raise SearchError("IMAGE is empty: send the bytes of an image file")
            if len(self.image) > MAX_IMAGE_BYTES:
                raise SearchError(f"IMAGE is {len(self.image)} bytes; the limit is {MAX_IMAGE_BYTES}")
        elif not self.query.strip():
            raise SearchError("QUERY is empty: send the text to search for (or an IMAGE)")
        if len(self.query) > max_query_chars:
            raise SearchError(f"QUERY is {len(self.query)} characters long; the limit is {max_query_chars}")
        if not self.collection:
            raise SearchError("COLLECTION is empty: name the collection to search")
        if not 1 <= self.top_k <= max_top_k:
            raise SearchError(f"TOP_K must be between 1 and {max_top_k}, got {self.top_k}")
        unknown = set(self.params) - KNOWN_PARAMS
        if unknown:
            raise SearchError(
                f"unknown PARAMS keys: {', '.join(sorted(unknown))} (known: {', '.join(sorted(KNOWN_PARAMS))})"
            )
        forced = self.params.get("experiments", {})
        if not isinstance(forced, dict) or not all(isinstance(v, str) for v in forced.values()):
            raise SearchError('PARAMS "experiments" must map layers to arm names, e.g. {"rank": "mmr"}')
