"""Triton python (BLS) model `search`: QUERY, COLLECTION, TOP_K [, USER_ID, PARAMS] -> RESULT (JSON).

Parses tensors, embeds the query through the `*_embed` ensembles by BLS, and hands
everything else to `Searcher`. A bad request gets an error response; the model keeps serving.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from mmsearch.model_repository.runtime import ModelArgs
from mmsearch.model_repository.search_pipeline import SearchError, SearchRequest, Searcher
from mmsearch.settings import StoreSettings
from mmsearch.stores import VectorStore, open_document_store


def embed_by_bls(model_name: str, input_name: str, payload) -> np.ndarray:
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    request = pb_utils.InferenceRequest(
        model_name=model_name,
        requested_output_names=["EMBEDDING"],
        inputs=[pb_utils.Tensor(input_name, np.array([[data]], dtype=np.object_))],
    )
    response = request.exec()
    if response.has_error():
        raise SearchError(f"{model_name} failed: {response.error().message()}")
    return pb_utils.get_output_tensor_by_name(response, "EMBEDDING").as_numpy()[0]


def optional_scalar(request, name: str, default):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return default if tensor is None else tensor.as_numpy().reshape(-1)[0]


def optional_bytes(request, name: str) -> bytes | None:
    value = optional_scalar(request, name, None)
    return None if value is None else bytes(value)


class TritonPythonModel:
    def initialize(self, args):
        model = ModelArgs(args)
        settings = StoreSettings.resolve()  # from MMSEARCH_* set by `mmsearch serve`
        self.searcher = Searcher(
            embed_by_bls,
            lambda: VectorStore.open(settings),
            lambda: open_document_store(settings),
            max_top_k=int(model.parameter("max_top_k", "100")),
            max_query_chars=int(model.parameter("max_query_chars", "2048")),
        )
        self.searcher.connect()

    def execute(self, requests):
        return [self._answer(request) for request in requests]

    def _answer(self, request):
        try:
            search_request = SearchRequest.from_wire(
                optional_scalar(request, "QUERY", b""),
                optional_scalar(request, "COLLECTION", b""),
                optional_scalar(request, "TOP_K", 10),
                optional_scalar(request, "USER_ID", b""),
                optional_scalar(request, "PARAMS", b""),
                optional_bytes(request, "IMAGE"),
            )
            result = self.searcher.search(search_request)
        except SearchError as exc:
            return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(exc)))
        except Exception as exc:  # never let one request take the model down
            message = f"internal error: {exc.__class__.__name__}: {exc}"
            return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))
        payload = json.dumps(result, ensure_ascii=False).encode("utf-8")
        return pb_utils.InferenceResponse([pb_utils.Tensor("RESULT", np.array([payload], dtype=np.object_))])
