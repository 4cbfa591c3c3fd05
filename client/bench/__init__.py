"""`mmsearch bench`: our serving path against what a user would run instead, in one run.

On the same model (the repository's text encoder), the same query set (the Debian FAQ's 146
section headings) and the same collection (its 147 answers), measured one after another on
this machine:

  (a) raw onnxruntime in this process: the encoder's limit here (no server, no network)  raw.py
  (b) the naive service: HTTP + sentence-transformers per request + the same Milvus search  baselines.py
  (c) the `text_embed` ensemble through Triton, driven by perf_analyzer                  perf_analyzer.py
  (d) the full `search` model through Triton, driven by perf_analyzer
  (e) indexing throughput through Triton into Milvus and the document store
  and `text_embed` with dynamic batching switched off, to show what batching buys.       run.py

`--scale N` instead measures search over N random vectors (scale.py). Every figure is reported
with its ratio to (a) or (b) from the same run, never to a number from another day or machine
(report.py).
"""

from mmsearch.errors import MmsearchError

BENCH_COLLECTION = "bench_faq"
TOP_K = 10
CONCURRENCY = (1, 4, 16)


class BenchError(MmsearchError):
    pass
