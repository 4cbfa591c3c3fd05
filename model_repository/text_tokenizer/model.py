"""Triton python model: TEXT (BYTES) -> input_ids, attention_mask (INT64).

Serves `text_tokenizer` and `clip_text_tokenizer`. All requests that Triton hands over in
one call are tokenized together, so they share one padded length and the encoder's
dynamic batcher can merge them.
"""

import triton_python_backend_utils as pb_utils

from mmsearch.model_repository.runtime import ModelArgs, decode_text
from mmsearch.model_repository.text_tokenizer.tokenization import BatchTokenizer


class TritonPythonModel:
    def initialize(self, args):
        model = ModelArgs(args)
        self.tokenize = BatchTokenizer(model.version_dir / "tokenizer", int(model.parameter("max_seq_length")))

    def execute(self, requests):
        texts, sizes = [], []
        for request in requests:
            batch = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            texts.extend(decode_text(value) for value in batch)
            sizes.append(len(batch))
        input_ids, attention_mask = self.tokenize(texts)
        responses, start = [], 0
        for size in sizes:
            rows = slice(start, start + size)
            start += size
            responses.append(
                pb_utils.InferenceResponse(
                    [
                        pb_utils.Tensor("input_ids", input_ids[rows]),
                        pb_utils.Tensor("attention_mask", attention_mask[rows]),
                    ]
                )
            )
        return responses
