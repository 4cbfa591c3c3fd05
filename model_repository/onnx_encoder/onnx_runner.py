"""An onnxruntime session for the python-backend encoder models.

The local Triton (from the nvidia-pytriton wheel) ships only the python backend, so the
ONNX encoders run inside a python model. Requests batched by Triton may carry different
sequence lengths; they are padded to the longest (mask 0, which pooling ignores) and run
as one session call.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def session_options(intra_op_threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    # Explicit thread counts: several instances each defaulting to "all cores" oversubscribe.
    options.intra_op_num_threads = intra_op_threads or (os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def providers_for(device: str, device_id: int = 0) -> list:
    if device == "cuda":
        return [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxEncoder:
    def __init__(self, path: str | Path, *, device: str = "cpu", device_id: int = 0, intra_op_threads: int = 0):
        import onnxruntime as ort

        self.session = ort.InferenceSession(
            str(path), sess_options=session_options(intra_op_threads), providers=providers_for(device, device_id)
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def warmup(self, sequence_length: int = 8) -> None:
        """One tiny run at load time, so the first user request does not pay for allocation."""
        dtypes = {
            "tensor(int64)": np.int64,
            "tensor(int32)": np.int32,
            "tensor(float)": np.float32,
            "tensor(float16)": np.float16,
        }
        feeds = {}
        for spec in self.session.get_inputs():
            shape = [1] + [d if isinstance(d, int) else sequence_length for d in spec.shape[1:]]
            feeds[spec.name] = np.ones(shape, dtype=dtypes.get(spec.type, np.float32))
        self.run([feeds])

    def run(self, requests: Sequence[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """Run several requests' feeds as one batch; returns each request's outputs."""
        sizes = [len(next(iter(feeds.values()))) for feeds in requests]
        merged = {name: concat_padded([feeds[name] for feeds in requests]) for name in self.input_names}
        outputs = self.session.run(self.output_names, merged)
        split_at = np.cumsum(sizes)[:-1]
        per_output = [np.split(out, split_at) for out in outputs]
        return [dict(zip(self.output_names, parts, strict=True)) for parts in zip(*per_output, strict=True)]


def concat_padded(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Concatenate on axis 0, right-padding axis 1 with zeros where lengths differ."""
    if arrays[0].ndim < 2 or len({a.shape[1:] for a in arrays}) == 1:
        return np.concatenate(arrays)
    length = max(a.shape[1] for a in arrays)
    return np.concatenate([np.pad(a, [(0, 0), (0, length - a.shape[1])] + [(0, 0)] * (a.ndim - 2)) for a in arrays])
