"""Triton python model: an ONNX encoder run by onnxruntime (for servers without that backend).

Rendered as `text_encoder` (and the CLIP encoders), or as a whole `*_embed` model for a graph
that tokenizes itself (TEXT in, EMBEDDING out); `model.onnx` sits next to this file.
Inputs and outputs are whatever the ONNX graph declares; TEXT arrives as UTF-8 bytes, which
the runner decodes to str (onnxruntime would read a bytes element as its repr).
"""

import triton_python_backend_utils as pb_utils

from mmsearch.model_repository.onnx_encoder.onnx_runner import OnnxEncoder
from mmsearch.model_repository.runtime import ModelArgs


class TritonPythonModel:
    def initialize(self, args):
        model = ModelArgs(args)
        device = "cuda" if model.instance_kind == "GPU" else "cpu"
        self.encoder = OnnxEncoder(
            model.version_dir / "model.onnx",
            device=device,
            device_id=model.device_id,
            intra_op_threads=int(model.parameter("intra_op_threads", "0")),
            custom_op_library=model.parameter("custom_op_library", ""),
        )
        self.encoder.warmup()

    def execute(self, requests):
        feeds = [
            {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.encoder.input_names}
            for request in requests
        ]
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor(name, value) for name, value in outputs.items()])
            for outputs in self.encoder.run(feeds)
        ]
