import numpy as np

from mmsearch.model_repository.onnx_encoder.onnx_runner import concat_padded


def test_concat_padded_right_pads_shorter_sequences_with_zeros():
    a = np.ones((2, 3), dtype=np.int64)
    b = np.full((1, 5), 2, dtype=np.int64)
    merged = concat_padded([a, b])
    assert merged.shape == (3, 5)
    assert merged[:2, 3:].sum() == 0 and merged[2].tolist() == [2] * 5


def test_concat_padded_same_shapes_is_plain_concatenation():
    a, b = np.zeros((1, 4)), np.ones((2, 4))
    assert np.array_equal(concat_padded([a, b]), np.concatenate([a, b]))


def test_warmup_runs_on_the_exported_encoder(exported_repository):
    from mmsearch.model_repository.onnx_encoder.onnx_runner import OnnxEncoder

    encoder = OnnxEncoder(exported_repository / "text_encoder" / "1" / "model.onnx", intra_op_threads=1)
    encoder.warmup()
    ids = np.array([[101, 2000, 102, 0]], dtype=np.int64)

    def embed(input_ids):
        return encoder.run([{"input_ids": input_ids, "attention_mask": (input_ids > 0).astype(np.int64)}])[0][
            "embedding"
        ]

    assert np.allclose(embed(ids[:, :3]), embed(ids), atol=1e-5)  # padding with mask 0 changes nothing
