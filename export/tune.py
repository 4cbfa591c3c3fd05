"""`mmsearch tune`: fine-tune a sentence-transformers bi-encoder on in-domain pairs.

In-batch negatives (sentence-transformers' MultipleNegativesRankingLoss): each query is trained
to score its own positive above every other positive in the batch, and above a hard negative
where the pair has one (given, or mined from the model's own top-k). A seeded dev split is held
out and scored (MRR, R@1) before training and after each epoch; the best epoch is kept. The
result is a sentence-transformers directory that `mmsearch export --text-model DIR` takes as is.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mmsearch.errors import MmsearchError
from mmsearch.jsonl import JsonLinesError, read_jsonl

CORPORA = ("debian-docs",)
MIN_DEV_PAIRS = 8
HARD_NEGATIVE_MARGIN = 0.05  # a candidate this close to the positive's score may well be a positive too


class TuneError(MmsearchError):
    """The pairs, the model or the options cannot give a tuned model."""


@dataclass(frozen=True)
class Pair:
    query: str
    positive: str
    negative: str | None = None


@dataclass
class TuneOptions:
    out: Path
    pairs: Path | None = None
    corpus: str | None = None
    base_model: str | None = None  # default: the MiniLM that export uses
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 2e-5
    warmup: float = 0.1  # fraction of the steps
    seed: int = 0
    dev_fraction: float = 0.1
    hard_negatives: int = 0  # mine one from the top-k of the base model; 0: none
    max_seq_length: int | None = None  # default: the model's own
    device: str = "auto"


@dataclass
class TuneReport:
    base_model: str
    out: str
    pairs: int
    train_pairs: int
    dev_pairs: int
    device: str
    epochs: list[dict] = field(default_factory=list)  # {"epoch", "mrr", "recall@1", "loss"}; epoch 0 = before
    best_epoch: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @staticmethod
    def epoch_line(e: dict) -> str:
        return (f"epoch {e['epoch']}: dev MRR {e['mrr']:.3f}, R@1 {e['recall@1']:.3f}"
                + (f", train loss {e['loss']:.3f}" if e.get("loss") is not None else " (before tuning)"))

    def best(self) -> dict:
        """The epoch with the best dev MRR (then R@1); the earlier one on a tie."""
        return max(self.epochs, key=lambda e: (e["mrr"], e["recall@1"], -e["epoch"]))

    def summary(self) -> str:
        before, kept = self.epochs[0], self.best()
        return "\n".join([*self.notes,
                          f"tuned {self.base_model} on {self.train_pairs} pairs ({self.dev_pairs} held out for dev) "
                          f"on {self.device} in {self.seconds:.0f} s",
                          f"dev MRR {before['mrr']:.3f} -> {kept['mrr']:.3f}, R@1 {before['recall@1']:.3f} -> "
                          f"{kept['recall@1']:.3f} (epoch {kept['epoch']} kept)",
                          f"wrote {self.out}: export it with `mmsearch export --text-model {self.out}`"])


def _pair(record: dict) -> Pair:
    for key in ("query", "positive"):
        if not isinstance(record.get(key), str) or not record[key].strip():
            raise ValueError(f"needs a non-empty string field '{key}'")
    negative = record.get("negative")
    if negative is not None and (not isinstance(negative, str) or not negative.strip()):
        raise ValueError("'negative', when given, must be a non-empty string")
    return Pair(record["query"], record["positive"], negative)


def read_pairs(path: Path) -> list[Pair]:
    """Every line a pair; the first bad line stops with its number."""
    try:
        pairs = read_jsonl(path, _pair).records
    except JsonLinesError as exc:
        raise TuneError(str(exc)) from None
    if not pairs:
        raise TuneError(f'{path} holds no pairs: one JSON object per line, {{"query": ..., "positive": ...}}')
    return pairs


def corpus_pairs(corpus: str, out: Path) -> tuple[Path, str]:
    """Build a named corpus's pairs into OUT/pairs.jsonl; (that file, a note on what was left out)."""
    from mmsearch.indexer.datasets import debian_doc_pairs, debian_faq, write_jsonl

    if corpus not in CORPORA:
        raise TuneError(f"unknown corpus {corpus!r} (known: {', '.join(CORPORA)})")
    try:
        pairs = debian_doc_pairs()
    except FileNotFoundError as exc:
        raise TuneError(str(exc)) from None
    try:  # the FAQ is the evaluation set: never train on one of its headings
        headings = {doc["question"].lower() for doc in debian_faq().documents}
    except FileNotFoundError:
        headings = set()
    kept = [pair for pair in pairs if pair["query"].lower() not in headings]
    path = write_jsonl(kept, out / "pairs.jsonl")
    return path, (f"{corpus}: {len(kept)} pairs from the Debian Reference and the Debian Handbook "
                  f"({len(pairs) - len(kept)} left out: their title is a Debian FAQ heading)")


def split_dev(pairs: list[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_dev = max(MIN_DEV_PAIRS, round(len(pairs) * fraction))
    return [pairs[i] for i in order[n_dev:]], [pairs[i] for i in order[:n_dev]]


def load_bi_encoder(name: str, device: str):
    """A sentence-transformers model, refusing what is not a bi-encoder (a cross-encoder, CLIP)."""
    from sentence_transformers import SentenceTransformer

    config_path = Path(name) / "config.json"
    if Path(name).is_dir() and not config_path.exists():
        raise TuneError(f"{name} is not a model directory (no config.json)")
    if config_path.exists():
        config = json.loads(config_path.read_text())
        kind = config.get("model_type", "")
        if any(arch.endswith(("ForSequenceClassification", "ForTokenClassification"))
               for arch in config.get("architectures") or []):
            raise TuneError(f"{name} is a classifier (a cross-encoder scores pairs), not a bi-encoder that embeds "
                            "one text: give a sentence-transformers model")
        if kind.startswith("clip") or kind in ("t5", "bart", "whisper"):
            raise TuneError(f"{name} is a {kind} model, not a sentence-transformers bi-encoder")
    try:
        return SentenceTransformer(name, device=device)
    except Exception as exc:  # OSError offline, ValueError for unknown architectures, ...
        raise TuneError(f"cannot load {name} as a sentence-transformers model: {exc}") from None


def dev_metrics(model, dev: list[Pair], batch_size: int) -> dict[str, float]:
    """Each dev query against every dev positive: MRR and R@1 of its own."""
    queries = model.encode([p.query for p in dev], batch_size=batch_size, normalize_embeddings=True)
    positives = model.encode([p.positive for p in dev], batch_size=batch_size, normalize_embeddings=True)
    scores = queries @ positives.T
    ranks = 1 + (scores > np.diag(scores)[:, None]).sum(axis=1)
    return {"mrr": round(float(np.mean(1.0 / ranks)), 4), "recall@1": round(float(np.mean(ranks == 1)), 4)}


def mine_hard_negatives(model, pairs: list[Pair], top_k: int, batch_size: int) -> list[Pair]:
    """A pair without a negative gets the highest-scoring other positive within the model's top-k
    that scores clearly below its own positive (closer ones are likely unlabelled positives)."""
    queries = model.encode([p.query for p in pairs], batch_size=batch_size, normalize_embeddings=True)
    positives = model.encode([p.positive for p in pairs], batch_size=batch_size, normalize_embeddings=True)
    scores = queries @ positives.T
    mined = []
    for i, pair in enumerate(pairs):
        if pair.negative is not None:
            mined.append(pair)
            continue
        ceiling = scores[i, i] - HARD_NEGATIVE_MARGIN
        candidates = [j for j in np.argsort(-scores[i])[: top_k + 1] if j != i and scores[i, j] < ceiling]
        mined.append(Pair(pair.query, pair.positive, pairs[candidates[0]].positive) if candidates else pair)
    return mined


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise TuneError("--device cuda, but torch sees no CUDA device here")
    return device


def check_options(options: TuneOptions) -> None:
    if (options.pairs is None) == (options.corpus is None):
        raise TuneError("give one of --pairs FILE or --corpus NAME")
    if options.out.exists() and any(options.out.iterdir()) and not (options.out / "tune_report.json").exists():
        raise TuneError(f"{options.out} exists and is not an earlier `mmsearch tune` output: choose another --out")


def training_pairs(options: TuneOptions) -> tuple[list[Pair], list[Pair], list[str]]:
    """(train, dev, notes): the pairs split, refused before any model loads if too few."""
    pairs_path, notes = options.pairs, []
    if options.corpus:
        pairs_path, note = corpus_pairs(options.corpus, options.out)
        notes.append(note)
    pairs = read_pairs(pairs_path)
    train, dev = split_dev(pairs, options.dev_fraction, options.seed)
    if len(train) < options.batch_size:
        raise TuneError(f"{len(pairs)} pairs leave {len(train)} for training after the {len(dev)} held out for dev: "
                        f"fewer than one batch of {options.batch_size} (lower --batch-size or add pairs)")
    return train, dev, notes


def tune(options: TuneOptions, progress: bool = True, log: Callable[[str], None] = print) -> TuneReport:
    import torch

    from mmsearch.export.text_encoder import default_text_model

    check_options(options)
    started = time.perf_counter()
    options.out.mkdir(parents=True, exist_ok=True)
    train, dev, notes = training_pairs(options)
    random.seed(options.seed)
    np.random.seed(options.seed)
    torch.manual_seed(options.seed)
    device, base = resolve_device(options.device), options.base_model or default_text_model()
    model = load_bi_encoder(base, device)
    if options.max_seq_length:
        model.max_seq_length = options.max_seq_length
    if options.hard_negatives:
        train = mine_hard_negatives(model, train, options.hard_negatives, options.batch_size)
    report = TuneReport(base, str(options.out), len(train) + len(dev), len(train), len(dev), device, notes=notes)
    training, best_state = Training(model, train, options, progress), None
    for epoch in range(options.epochs + 1):
        loss = training.epoch(epoch) if epoch else None
        report.epochs.append({"epoch": epoch, **dev_metrics(model, dev, options.batch_size), "loss": loss})
        log(report.epoch_line(report.epochs[-1]))
        if report.best()["epoch"] == epoch and epoch:
            best_state = copy.deepcopy(model.state_dict())
    report.best_epoch = report.best()["epoch"]
    if best_state is None:  # no epoch beat the base model on dev: what is written is the base model
        report.notes.append("no epoch improved dev MRR over the base model: the base model is written unchanged")
        model = load_bi_encoder(base, device)
    else:
        model.load_state_dict(best_state)
    model.save(str(options.out))
    report.seconds = round(time.perf_counter() - started, 1)
    (options.out / "tune_report.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    return report


class Training:
    """MultipleNegativesRankingLoss with AdamW and linear warmup then decay over the whole run."""

    def __init__(self, model, train: list[Pair], options: TuneOptions, progress: bool):
        import torch
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
        from transformers import get_linear_schedule_with_warmup

        self.model, self.train, self.options, self.progress = model, train, options, progress
        self.tokenize = getattr(model, "preprocess", None) or model.tokenize  # renamed in sentence-transformers 6
        steps = options.epochs * math.ceil(len(train) / options.batch_size)
        self.loss = MultipleNegativesRankingLoss(model)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=options.learning_rate)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, round(options.warmup * steps), steps)

    def epoch(self, number: int) -> float:
        """One pass over shuffled batches; the mean loss."""
        from tqdm import tqdm

        order = list(range(len(self.train)))
        random.Random(self.options.seed + number).shuffle(order)
        size = self.options.batch_size
        batches = [order[i : i + size] for i in range(0, len(order), size)]
        batches = [batch for batch in batches if len(batch) > 1]  # one pair has no in-batch negative
        self.model.train()
        losses = [self.step([self.train[i] for i in batch])
                  for batch in tqdm(batches, desc=f"epoch {number}/{self.options.epochs}", unit="batch",
                                    disable=not self.progress)]
        self.model.eval()
        return round(float(np.mean(losses)), 4)

    def step(self, pairs: list[Pair]) -> float:
        from sentence_transformers.util import batch_to_device

        columns = [[p.query for p in pairs], [p.positive for p in pairs]]
        if all(p.negative for p in pairs):
            columns.append([p.negative for p in pairs])
        features = [batch_to_device(self.tokenize(texts), self.model.device) for texts in columns]
        loss = self.loss(features, None)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        return float(loss.detach())
