"""Python client for an mmsearch Triton server, over gRPC or HTTP (tritonclient)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
from tritonclient.utils import InferenceServerException

from mmsearch.errors import MmsearchError
from mmsearch.model_repository.contract import (
    CLIP_IMAGE_EMBED,
    COLLECTION,
    DEFAULT_TOP_K,
    DEFAULT_URL,
    EMBEDDING,
    IMAGE,
    PARAMS,
    QUERY,
    RESULT,
    SEARCH,
    TEXT,
    TEXT_TOWER,
    TOP_K,
    USER_ID,
)

PROTOCOLS = ("grpc", "http")


class ClientError(MmsearchError):
    """The server could not be reached or answered with an error; the message says which."""


def _module(protocol: str):
    if protocol == "grpc":
        import tritonclient.grpc as module
    elif protocol == "http":
        import tritonclient.http as module
    else:
        raise ClientError(f"unknown protocol {protocol!r}: use grpc or http")
    return module


def _bytes_input(module, name: str, values: Sequence[bytes], shape: Sequence[int]):
    tensor = module.InferInput(name, list(shape), "BYTES")
    tensor.set_data_from_numpy(np.array(values, dtype=np.object_).reshape(shape))
    return tensor


class SearchClient:
    def __init__(self, url: str = DEFAULT_URL, protocol: str = "grpc", timeout_s: float = 60.0):
        self.url, self.protocol, self.timeout_s = url, protocol, timeout_s
        self._module = _module(protocol)
        try:
            if protocol == "http":
                self._client = self._module.InferenceServerClient(
                    url, connection_timeout=timeout_s, network_timeout=timeout_s
                )
            else:
                self._client = self._module.InferenceServerClient(url)
        except Exception as exc:
            raise ClientError(f"cannot create a {protocol} client for {url}: {exc}") from exc

    def _call(self, what: str, fn):
        try:
            return fn()
        except InferenceServerException as exc:
            message = exc.message() if callable(getattr(exc, "message", None)) else str(exc)
            raise ClientError(f"{what} failed: {message}") from None
        except (ConnectionError, OSError) as exc:
            raise ClientError(f"cannot reach Triton at {self.url} ({self.protocol}): {exc}") from None

    def _infer(self, model: str, inputs, outputs: Sequence[str]):
        requested = [self._module.InferRequestedOutput(name) for name in outputs]
        kwargs = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
        return self._call(model, lambda: self._client.infer(model, inputs, outputs=requested, **kwargs))

    def is_ready(self) -> bool:
        try:
            return bool(self._client.is_server_ready())
        except Exception:
            return False

    def require_ready(self) -> None:
        if not self.is_ready():
            raise ClientError(
                f"Triton at {self.url} ({self.protocol}) is not reachable or not ready: start it with `mmsearch serve`"
            )

    def models(self) -> dict[str, str]:
        """Model name -> state (READY, UNAVAILABLE, ...) from the server's repository index."""
        index = self._call("reading the model repository index", self._client.get_model_repository_index)
        if self.protocol == "grpc":
            return {model.name: model.state or "UNKNOWN" for model in index.models}
        return {model["name"]: model.get("state", "UNKNOWN") for model in index}

    def load(self, models: Sequence[str]) -> None:
        """Load (or reload) models from the server's repository, in order: a running server picks up
        models written after it started (it runs in explicit model-control mode)."""
        for model in models:
            self._call(f"loading {model}", lambda model=model: self._client.load_model(model))

    def catalog(self) -> list[dict]:
        """The collections the server can search, with size, modality and experiment arms."""
        return self.search("", "", params={"catalog": True})["collections"]

    def embedding_dim(self, model: str = TEXT_TOWER.embed) -> int:
        config = self._call(f"reading {model} config", lambda: self._client.get_model_config(model))
        if self.protocol == "grpc":
            return int(config.config.output[0].dims[0])
        return int(config["output"][0]["dims"][0])

    def embed_texts(self, texts: Sequence[str], model: str = TEXT_TOWER.embed, batch_size: int = 32) -> np.ndarray:
        """Unit vectors for texts, through the same ensemble the server uses for queries; sent
        `batch_size` at a time (the ensembles take 64 at most)."""
        if len(texts) > batch_size:
            return np.concatenate([self.embed_texts(texts[i:i + batch_size], model, batch_size)
                                   for i in range(0, len(texts), batch_size)])
        inputs = [_bytes_input(self._module, TEXT, [t.encode("utf-8") for t in texts], (len(texts), 1))]
        return self._infer(model, inputs, [EMBEDDING]).as_numpy(EMBEDDING)

    def embed_images(self, images: Sequence[bytes], model: str = CLIP_IMAGE_EMBED) -> np.ndarray:
        """Unit vectors for a batch of encoded image files (JPEG, PNG, ...)."""
        inputs = [_bytes_input(self._module, IMAGE, list(images), (len(images), 1))]
        return self._infer(model, inputs, [EMBEDDING]).as_numpy(EMBEDDING)

    def search(
        self,
        query: str,
        collection: str,
        top_k: int = DEFAULT_TOP_K,
        user_id: str | None = None,
        params: dict | None = None,
        image: bytes | None = None,
    ) -> dict:
        """Search with text, or with an image (encoded file bytes) for image -> image search."""
        # [1, 1]: a batch of one request (the server batches requests itself)
        inputs = [
            _bytes_input(self._module, QUERY, [query.encode("utf-8")], (1, 1)),
            _bytes_input(self._module, COLLECTION, [collection.encode("utf-8")], (1, 1)),
        ]
        top = self._module.InferInput(TOP_K, [1, 1], "INT32")
        top.set_data_from_numpy(np.array([[top_k]], dtype=np.int32))
        inputs.append(top)
        if user_id:
            inputs.append(_bytes_input(self._module, USER_ID, [user_id.encode("utf-8")], (1, 1)))
        if params:
            inputs.append(_bytes_input(self._module, PARAMS, [json.dumps(params).encode("utf-8")], (1, 1)))
        if image is not None:
            inputs.append(_bytes_input(self._module, IMAGE, [image], (1, 1)))
        result = self._infer(SEARCH, inputs, [RESULT]).as_numpy(RESULT)
        return json.loads(result.reshape(-1)[0])

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> SearchClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def connect(url: str = DEFAULT_URL, protocol: str = "grpc") -> SearchClient:
    """A client of a Triton that is up and ready (ClientError otherwise)."""
    client = SearchClient(url, protocol)
    client.require_ready()
    return client


def search_params(experiments: dict[str, str] | None = None, filter: str | None = None, debug: bool = False) -> dict:
    """PARAMS for the `search` model: forced arms (layer -> arm), a filter, debug output."""
    return {**({"experiments": experiments} if experiments else {}), **({"filter": filter} if filter else {}),
            **({"debug": True} if debug else {})}
