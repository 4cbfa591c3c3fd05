"""Triton python (BLS) model `search`: QUERY, COLLECTION, TOP_K [, IMAGE, USER_ID, PARAMS] -> RESULT (JSON).

Parses tensors, embeds the query through the `*_embed` ensembles by BLS, and hands
everything else to `Searcher`. A bad request gets an error response; the model keeps serving.
"""

import json
import os
from functools import partial

import numpy as np
import triton_python_backend_utils as pb_utils

from mmsearch.errors import MmsearchError
from mmsearch.model_repository.contract import (
    COLLECTION,
    DEFAULT_TOP_K,
    EMBEDDING,
    IMAGE,
    MAX_QUERY_CHARS,
    MAX_TOP_K,
    PARAMS,
    QUERY,
    RESULT,
    TOP_K,
    USER_ID,
)
from mmsearch.model_repository.runtime import ModelArgs
from mmsearch.model_repository.search.experiments import ConfigWatcher, parse_config
from mmsearch.model_repository.search.layers import arm_validator
from mmsearch.model_repository.search.request import INTERNAL, INVALID, UNAVAILABLE, SearchError, SearchRequest
from mmsearch.model_repository.search.searcher import Searcher
from mmsearch.settings import ENV_EXPERIMENTS, StoreSettings
from mmsearch.stores import VectorStore, open_document_store

# Fine enough below 100 ms that quantiles read from the histogram (bench) are close to the true ones.
LATENCY_BUCKETS_MS = [0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000, 2000, 5000]


class TritonMetrics:
    """Per-stage latency histograms and per-arm request counters on Triton's metrics port."""

    def __init__(self):
        self.latency = pb_utils.MetricFamily(
            name="mmsearch_stage_latency_ms", description="search latency per retrieval stage, milliseconds",
            kind=pb_utils.MetricFamily.HISTOGRAM,
        )
        self.requests = pb_utils.MetricFamily(
            name="mmsearch_arm_requests_total", description="search requests per scene, layer and experiment arm",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self._metrics = {}  # label tuple -> Metric; created once, then only updated

    def _metric(self, family, labels: dict, **kwargs):
        key = (id(family), *sorted(labels.items()))
        if key not in self._metrics:
            self._metrics[key] = family.Metric(labels=labels, **kwargs)
        return self._metrics[key]

    def observe(self, scene: str, stage: str, ms: float) -> None:
        self._metric(self.latency, {"scene": scene, "stage": stage}, buckets=LATENCY_BUCKETS_MS).observe(ms)

    def count(self, scene: str, layer: str, arm: str) -> None:
        self._metric(self.requests, {"scene": scene, "layer": layer, "arm": arm}).increment(1)


def embed_by_bls(model_name: str, input_name: str, payloads) -> np.ndarray:
    """Every payload in one request to a `*_embed` ensemble: a [n, 1] BYTES tensor in, [n, dim] out."""
    data = [[p.encode("utf-8") if isinstance(p, str) else p] for p in payloads]
    request = pb_utils.InferenceRequest(
        model_name=model_name,
        requested_output_names=[EMBEDDING],
        inputs=[pb_utils.Tensor(input_name, np.array(data, dtype=np.object_))],
    )
    response = request.exec()
    if response.has_error():
        raise SearchError(f"{model_name} failed: {response.error().message()}")
    return pb_utils.get_output_tensor_by_name(response, EMBEDDING).as_numpy()


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
        # Re-read within a second of an edit; a broken edit is logged and the last good config serves on.
        self.experiments = ConfigWatcher(
            os.environ.get(ENV_EXPERIMENTS),
            partial(parse_config, validate_arm=arm_validator()),
            interval_s=1.0,
            background=True,
        )
        self.searcher = Searcher(
            embed_by_bls,
            lambda: VectorStore.open(settings),
            lambda: open_document_store(settings),
            experiments=self.experiments.current,
            recorder=TritonMetrics(),
            max_top_k=int(model.parameter("max_top_k", str(MAX_TOP_K))),
            max_query_chars=int(model.parameter("max_query_chars", str(MAX_QUERY_CHARS))),
        )
        self.searcher.connect()

    def finalize(self):
        self.searcher.close()

    def execute(self, requests):
        """All the requests the dynamic batcher handed over, searched together."""
        parsed = [self._parse(request) for request in requests]
        valid = [p for p in parsed if isinstance(p, SearchRequest)]
        try:
            results = iter(self.searcher.search_many(valid))
        except Exception as exc:  # never let one batch take the model down
            failure = SearchError(f"internal error: {exc.__class__.__name__}: {exc}", INTERNAL)
            results = iter([failure] * len(valid))
        return [respond(next(results) if isinstance(p, SearchRequest) else p) for p in parsed]

    def _parse(self, request) -> SearchRequest | MmsearchError:
        try:
            return SearchRequest.from_wire(
                optional_scalar(request, QUERY, b""),
                optional_scalar(request, COLLECTION, b""),
                optional_scalar(request, TOP_K, DEFAULT_TOP_K),
                optional_scalar(request, USER_ID, b""),
                optional_scalar(request, PARAMS, b""),
                optional_bytes(request, IMAGE),
            )
        except MmsearchError as exc:
            return exc.detached()


def error_code(error: MmsearchError) -> int:
    """The python backend's code for whose fault it is: INVALID_ARG for the caller's,
    UNAVAILABLE for a store that is down, INTERNAL for ours. Triton 2.51 answers the first
    with HTTP 400 and the others with 500; its gRPC frontend says INTERNAL for all three."""
    codes = {INVALID: pb_utils.TritonError.INVALID_ARG, UNAVAILABLE: pb_utils.TritonError.UNAVAILABLE}
    return codes.get(getattr(error, "status", INTERNAL), pb_utils.TritonError.INTERNAL)


def respond(outcome: dict | MmsearchError):
    if isinstance(outcome, MmsearchError):
        error = pb_utils.TritonError(str(outcome), error_code(outcome))
        return pb_utils.InferenceResponse(output_tensors=[], error=error)
    payload = json.dumps(outcome, ensure_ascii=False).encode("utf-8")
    # [1, 1]: this request's row of the batch
    return pb_utils.InferenceResponse([pb_utils.Tensor(RESULT, np.array([[payload]], dtype=np.object_))])
