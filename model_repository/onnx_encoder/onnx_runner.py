"""An onnxruntime session for the python-backend encoder models.

The local Triton (from the nvidia-pytriton wheel) ships only the python backend, so the
ONNX encoders run inside a python model. Requests batched by Triton may carry different
sequence lengths; they are padded to the longest (mask 0, which pooling ignores) and run
as one session call.

A graph that holds its own tokenizer (`mmsearch export --text-onnx`) takes text and may use
custom ops; the library that implements them is registered in the session.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmsearch.model_repository.runtime import decode_text

# A `custom_op_library` value meaning "the library of the installed onnxruntime-extensions package",
# so a repository names no path of the machine that exported it.
ORT_EXTENSIONS = "onnxruntime-extensions"


class CustomOpLibraryError(RuntimeError):
    pass


def custom_op_library_path(library: str) -> str | None:
    """The file to register for a `custom_op_library` value ("" = none)."""
    if not library:
        return None
    if library == ORT_EXTENSIONS:
        try:
            import onnxruntime_extensions
        except ImportError as exc:
            raise CustomOpLibraryError(
                "the graph's custom ops need onnxruntime-extensions, which is not installed here "
                "(pip install onnxruntime-extensions)") from exc
        return onnxruntime_extensions.get_library_path()
    if not Path(library).is_file():
        raise CustomOpLibraryError(f"custom-op library {library} does not exist")
    return library


def session_options(intra_op_threads: int, custom_op_library: str = ""):
    import onnxruntime as ort

    options = ort.SessionOptions()
    library = custom_op_library_path(custom_op_library)
    if library:
        options.register_custom_ops_library(library)
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
    def __init__(self, path: str | Path, *, device: str = "cpu", device_id: int = 0, intra_op_threads: int = 0,
                 custom_op_library: str = ""):
        import onnxruntime as ort

        self.session = ort.InferenceSession(
            str(path), sess_options=session_options(intra_op_threads, custom_op_library),
            providers=providers_for(device, device_id),
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        # onnxruntime reads a bytes element of a string tensor as its repr, not as UTF-8.
        self.text_inputs = {i.name for i in self.session.get_inputs() if i.type == "tensor(string)"}
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
            if spec.type == "tensor(string)":
                feeds[spec.name] = np.full(shape, "warm up", dtype=object)
            else:
                feeds[spec.name] = np.ones(shape, dtype=dtypes.get(spec.type, np.float32))
        self.run([feeds])

    def run(self, requests: Sequence[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """Run several requests' feeds as one batch; returns each request's outputs."""
        sizes = [len(next(iter(feeds.values()))) for feeds in requests]
        merged = {name: concat_padded([feeds[name] for feeds in requests]) for name in self.input_names}
        for name in self.text_inputs & merged.keys():
            merged[name] = np.vectorize(decode_text, otypes=[object])(merged[name])
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
