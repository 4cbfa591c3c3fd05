"""(a) The encoder's limit on this machine: the repository's own tokenizer and ONNX encoder in-process."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mmsearch.client.bench.report import Row, percentiles_ms
from mmsearch.model_repository.contract import ATTENTION_MASK, ENCODER_OUTPUT, INPUT_IDS, TEXT_TOWER


def raw_encoder(repository: Path, threads: int) -> Callable[[Sequence[str]], np.ndarray]:
    """The repository's text tokenizer and ONNX encoder, called in this process."""
    from mmsearch.export import triton_config
    from mmsearch.model_repository.onnx_encoder.onnx_runner import OnnxEncoder
    from mmsearch.model_repository.text_tokenizer.tokenization import BatchTokenizer

    config = triton_config.parse((repository / TEXT_TOWER.tokenizer / "config.pbtxt").read_text())
    max_length = int(config.parameters["max_seq_length"].string_value)
    tokenize = BatchTokenizer(repository / TEXT_TOWER.tokenizer / "1" / "tokenizer", max_length)
    encoder = OnnxEncoder(repository / TEXT_TOWER.encoder / "1" / "model.onnx", intra_op_threads=threads)
    encoder.warmup()

    def encode(texts: Sequence[str]) -> np.ndarray:
        input_ids, attention_mask = tokenize(texts)
        return encoder.run([{INPUT_IDS: input_ids, ATTENTION_MASK: attention_mask}])[0][ENCODER_OUTPUT]

    return encode


def bench_raw(encoders: Sequence[Callable], texts: Sequence[str], batch_size: int, seconds: float, system: str,
              unit: str) -> Row:
    """Each encoder in its own thread (onnxruntime releases the GIL) takes the next batch of
    `texts`: cycling for at least `seconds`, or once through when `seconds` is 0 (as the
    indexer does). Latency is per batch."""
    batches = [texts[i:i + batch_size] for i in range(0, len(texts), batch_size)]
    for encode in encoders:
        encode(batches[0])
    latencies: list[float] = []
    done = [0] * len(encoders)
    turns = itertools.count()
    started = time.perf_counter()

    def worker(k: int) -> None:
        while True:
            turn = next(turns)
            if turn >= len(batches) and time.perf_counter() - started >= seconds:
                return
            batch = batches[turn % len(batches)]
            t0 = time.perf_counter()
            encoders[k](batch)
            latencies.append(time.perf_counter() - t0)
            done[k] += len(batch)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(encoders))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Row("a", system, None, sum(done) / (time.perf_counter() - started), unit, *percentiles_ms(latencies))


def measure_raw(repository: Path, cores: int, queries: Sequence[str], documents: Sequence[str], seconds: float,
                ) -> tuple[list[Row], Row, Row]:
    """Both ways onnxruntime can use the cores: one session with a thread per core, or a
    single-threaded session per core side by side. Returns (rows, the query limit, the document limit)."""
    wide = [raw_encoder(repository, cores)]
    narrow = [raw_encoder(repository, 1) for _ in range(cores)]
    layouts = ((wide, f"1 session × {cores} threads"), (narrow, f"{cores} sessions × 1 thread"))
    queries_rows = [
        bench_raw(wide, queries, 1, seconds, f"onnxruntime in-process, {layouts[0][1]}, batch 1", "queries/s"),
        bench_raw(wide, queries, 32, seconds, f"onnxruntime in-process, {layouts[0][1]}, batch 32", "queries/s"),
        bench_raw(narrow, queries, 1, seconds, f"onnxruntime in-process, {layouts[1][1]}, batch 1", "queries/s"),
    ]
    docs_row = max((bench_raw(encoders, documents, 32, 0,
                              f"onnxruntime in-process, {len(documents)} documents, {layout}, batch 32", "docs/s")
                    for encoders, layout in layouts), key=lambda row: row.throughput)
    return [*queries_rows, docs_row], max(queries_rows, key=lambda row: row.throughput), docs_row
