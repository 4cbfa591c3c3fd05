"""Tokenization for the `*_tokenizer` python models, kept free of Triton so it is unit-tested.

Queries are short: padding them to the model maximum (256 for MiniLM) costs ~4.6x in the
encoder, so a batch is padded to its longest member, rounded up to a multiple of 8 so that
requests from neighbouring batches share shapes and Triton's dynamic batcher can merge them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

PAD_MULTIPLE = 8


def padded_length(longest: int, max_length: int, multiple: int = PAD_MULTIPLE) -> int:
    rounded = -(-max(longest, 1) // multiple) * multiple
    return min(rounded, max_length)


def pad_batch(token_ids: Sequence[Sequence[int]], pad_id: int, max_length: int, multiple: int = PAD_MULTIPLE):
    """(input_ids, attention_mask) as int64 arrays of shape [batch, padded length]."""
    length = padded_length(max((len(ids) for ids in token_ids), default=1), max_length, multiple)
    input_ids = np.full((len(token_ids), length), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(token_ids), length), dtype=np.int64)
    for row, ids in enumerate(token_ids):
        ids = ids[:length]
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask


class BatchTokenizer:
    """A Hugging Face fast tokenizer that truncates at the model's maximum and pads per batch."""

    def __init__(self, tokenizer_dir: str | Path, max_length: int, multiple: int = PAD_MULTIPLE):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        self.max_length = int(max_length)
        self.multiple = multiple
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def __call__(self, texts: Sequence[str]):
        encoded = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_length, padding=False, return_attention_mask=False
        )
        return pad_batch(encoded["input_ids"], self.pad_id, self.max_length, self.multiple)
