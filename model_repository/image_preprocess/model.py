"""Triton python model `image_preprocess`: IMAGE (BYTES, an encoded file) -> pixel_values (FP32 [3, H, W]).

Uses the checkpoint's own CLIP image processor (resize, centre crop, mean/std) after
decoding with size limits, EXIF orientation and colour-mode handling. A bad image fails
only the request that carried it, with a message naming the problem.
"""

import triton_python_backend_utils as pb_utils

from mmsearch.model_repository.image_preprocess.image_preprocessing import ClipImagePreprocessor, ImageDecodeError
from mmsearch.model_repository.runtime import ModelArgs


class TritonPythonModel:
    def initialize(self, args):
        self.preprocess = ClipImagePreprocessor(ModelArgs(args).version_dir / "image_processor")

    def execute(self, requests):
        responses = []
        for request in requests:
            images = [
                bytes(value) for value in pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy().reshape(-1)
            ]
            try:
                pixels = self.preprocess(images)
            except ImageDecodeError as exc:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(exc))))
                continue
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("pixel_values", pixels)]))
        return responses
