import numpy as np
import pytest

from mmsearch.export.text_encoder import default_text_model
from mmsearch.model_repository.runtime import decode_text
from mmsearch.model_repository.text_tokenizer.tokenization import BatchTokenizer, pad_batch, padded_length


@pytest.mark.parametrize(
    "longest, max_length, expected",
    [(1, 256, 8), (8, 256, 8), (9, 256, 16), (250, 256, 256), (256, 256, 256), (75, 77, 77), (0, 256, 8)],
)
def test_padded_length_rounds_up_to_8_but_never_past_the_model_maximum(longest, max_length, expected):
    assert padded_length(longest, max_length) == expected


def test_pad_batch_pads_to_the_longest_member_not_the_maximum():
    ids, mask = pad_batch([[101, 7, 102], [101, 5, 6, 7, 8, 9, 10, 11, 12, 102]], pad_id=0, max_length=256)
    assert ids.shape == mask.shape == (2, 16)
    assert ids.dtype == mask.dtype == np.int64
    assert mask[0].tolist() == [1] * 3 + [0] * 13
    assert ids[1, :10].tolist() == [101, 5, 6, 7, 8, 9, 10, 11, 12, 102]


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from pathlib import Path

    return BatchTokenizer(Path(default_text_model()), max_length=256)


def test_real_tokenizer_truncates_at_max_seq_length(minilm_tokenizer):
    ids, mask = minilm_tokenizer(["word " * 1000, "short"])
    assert ids.shape == (2, 256)
    assert mask[0].sum() == 256 and mask[1].sum() == 3  # [CLS] short [SEP]


def test_real_tokenizer_short_queries_stay_short(minilm_tokenizer):
    ids, _ = minilm_tokenizer(["how do I install Debian?"])
    assert ids.shape == (1, 16)


def test_decode_text_replaces_invalid_utf8():
    assert decode_text(b"caf\xc3\xa9") == "café"
    assert decode_text(b"bad \xff byte") == "bad \ufffd byte"
