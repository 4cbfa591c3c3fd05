import numpy as np

from mmsearch.model_repository.onnx_runner import concat_padded


def test_concat_padded_right_pads_shorter_sequences_with_zeros():
    a = np.ones((2, 3), dtype=np.int64)
    b = np.full((1, 5), 2, dtype=np.int64)
    merged = concat_padded([a, b])
    assert merged.shape == (3, 5)
    assert merged[:2, 3:].sum() == 0 and merged[2].tolist() == [2] * 5


def test_concat_padded_same_shapes_is_plain_concatenation():
    a, b = np.zeros((1, 4)), np.ones((2, 4))
    assert np.array_equal(concat_padded([a, b]), np.concatenate([a, b]))
