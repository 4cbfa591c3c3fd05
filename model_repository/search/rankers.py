"""The rank stage: reorder the vector store's candidates before they are returned.

Pure functions over immutable inputs, so concurrent requests can call them from any thread
without locks. Every ranker sees candidates in "dense order": by store score, highest first,
ties kept in the order given, so results never depend on how the store broke its ties.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mmsearch.errors import MmsearchError

BM25_K1 = 1.2
BM25_B = 0.75
# Linear fusion weight of max-normalised BM25 against the dense cosine. Chosen by 2-fold
# cross-validation on the Debian FAQ set (0.2 won on both folds, each judged on the other).
DEFAULT_LEXICAL_WEIGHT = 0.2
FUSIONS = ("linear", "rrf")
_WORD = re.compile(r"\w+")  # str patterns match unicode word characters by default
# Scripts whose words are not separated by spaces (and Hangul, which Lucene treats alike): Han ideographs
# (々〆〇, Extension A, the unified block, compatibility ideographs, and planes 2-3, which hold Extensions
# B onwards), Hiragana, Katakana (with its phonetic extensions and halfwidth forms), Hangul jamo and syllables.
_CJK = ("\u3005-\u3007\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003ffff"
        "\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f"
        "\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\uac00-\ud7ff\uffa0-\uffdc")
_CJK_RUN = re.compile(f"([{_CJK}]+)")  # a group, so re.split keeps the runs: odd parts are CJK


@dataclass(frozen=True)
class Candidate:
    id: str
    score: float  # inner product of unit vectors from the vector store; higher is better
    vector: np.ndarray | None = None
    text: str = ""


class RankError(MmsearchError, ValueError):
    """Bad ranker name or parameters; the message names the problem."""


def _dense_order(candidates: Sequence[Candidate]) -> list[Candidate]:
    return sorted(candidates, key=lambda c: -c.score)  # sorted() is stable: ties keep input order


def _check_top_k(ranker: str, top_k) -> None:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
        raise RankError(f"{ranker}: top_k must be a non-negative integer, got {top_k!r}")


def _reject_unknown(ranker: str, params, known=()) -> None:
    unknown = sorted(k for k in params if k not in known)
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        listed = ", ".join(repr(k) for k in unknown)
        raise RankError(f"{ranker}: unknown parameter{plural} {listed} (known: {', '.join(known) or 'none'})")


def truncate(query_vector, candidates: Sequence[Candidate], top_k: int, **params) -> list[tuple[str, float]]:
    _reject_unknown("truncate", params)
    _check_top_k("truncate", top_k)
    return [(c.id, float(c.score)) for c in _dense_order(candidates)[:top_k]]


def mmr(
    query_vector, candidates: Sequence[Candidate], top_k: int, lambda_: float = 0.7, **params
) -> list[tuple[str, float]]:
    _reject_unknown("mmr", params, ("lambda_",))
    _check_top_k("mmr", top_k)
    if isinstance(lambda_, bool) or not isinstance(lambda_, (int, float)):
        raise RankError(f"mmr: lambda must be a number, got {lambda_!r}")
    if not 0.0 <= lambda_ <= 1.0:  # also rejects NaN
        raise RankError(f"mmr: lambda must be between 0 and 1, got {lambda_}")
    ordered = _dense_order(candidates)
    if not ordered or top_k == 0:
        return []
    missing = [c.id for c in ordered if c.vector is None]
    if missing:
        raise RankError(
            f"mmr: candidate vectors are needed (missing for {len(missing)}, e.g. {missing[0]!r})"
        )
    try:
        vectors = np.stack([np.asarray(c.vector, dtype=np.float64).ravel() for c in ordered])
    except ValueError as e:
        raise RankError(f"mmr: candidate vectors differ in length ({e})") from None
    # Relevance is the store's own score (it is sim(q, d)), not a recomputed q·d: that keeps
    # λ=1 identical to truncate even when the index quantises, and query_vector is unneeded.
    relevance = lambda_ * np.array([c.score for c in ordered], dtype=np.float64)
    # Max similarity to anything selected so far, updated incrementally: O(n·k), not O(n²).
    redundancy = np.zeros(len(ordered))
    available = np.ones(len(ordered), dtype=bool)
    picked: list[int] = []
    for _ in range(min(top_k, len(ordered))):
        gain = np.where(available, relevance - (1.0 - lambda_) * redundancy, -np.inf)
        best = int(np.argmax(gain))  # first maximum, i.e. ties go to the better dense rank
        picked.append(best)
        available[best] = False
        np.maximum(redundancy, vectors @ vectors[best], out=redundancy)
    return [(ordered[i].id, float(ordered[i].score)) for i in picked]


def tokenize(text: str) -> list[str]:
    """Lowercased words; CJK runs inside them become overlapping character bigrams (a lone character stays).

    Chinese and Japanese put no spaces between words, so a whole sentence would be one word that matches
    nothing. Bigrams need no segmenter (dictionary, extra dependency) and are the standard CJK practice for
    lexical search (Lucene's CJKBigramFilter): "如何升级Debian" -> 如何, 何升, 升级, debian.
    """
    words = _WORD.findall(text.lower())
    if not _CJK_RUN.search(text):  # the common case: the plain words, without a pass over each
        return words
    tokens = []
    for word in words:
        for i, part in enumerate(_CJK_RUN.split(word)):
            if i % 2:
                tokens += [part[j:j + 2] for j in range(max(1, len(part) - 1))]
            elif part:
                tokens.append(part)
    return tokens


def bm25_scores(query_text: str, texts: Sequence[str]) -> np.ndarray:
    """Okapi BM25 of each text for the query, with IDF and average length over `texts` only."""
    docs = [Counter(tokenize(t)) for t in texts]
    scores = np.zeros(len(docs))
    lengths = np.array([sum(d.values()) for d in docs], dtype=np.float64)
    if not docs or lengths.sum() == 0:
        return scores
    n, avgdl = len(docs), lengths.mean()
    norm = BM25_K1 * (1.0 - BM25_B + BM25_B * lengths / avgdl)
    # Repeated query terms count each time, as in the textbook sum over query terms.
    for term in tokenize(query_text):
        tf = np.array([d.get(term, 0) for d in docs], dtype=np.float64)
        df = int(np.count_nonzero(tf))
        if df == 0:
            continue
        idf = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
        scores += idf * tf * (BM25_K1 + 1.0) / (tf + norm)
    return scores


def hybrid(
    query_text: str, candidates: Sequence[Candidate], top_k: int, fusion: str = "linear",
    lexical_weight: float = DEFAULT_LEXICAL_WEIGHT, rrf_k: int = 60, **params
) -> list[tuple[str, float]]:
    """Lexical + dense: BM25 over the candidates' text fused with the dense ranking.

    linear: dense score + lexical_weight * BM25 / max BM25 (scores keep the cosine's scale);
    rrf: reciprocal rank fusion, 1/(rrf_k + dense rank) + lexical_weight/(rrf_k + BM25 rank).
    """
    _reject_unknown("hybrid", params, ("fusion", "lexical_weight", "rrf_k"))
    _check_top_k("hybrid", top_k)
    if fusion not in FUSIONS:
        raise RankError(f"hybrid: fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
    if isinstance(lexical_weight, bool) or not isinstance(lexical_weight, (int, float)) or not lexical_weight >= 0:
        raise RankError(f"hybrid: lexical_weight must be a non-negative number, got {lexical_weight!r}")
    if isinstance(rrf_k, bool) or not isinstance(rrf_k, (int, np.integer)) or rrf_k < 0:
        raise RankError(f"hybrid: rrf_k must be a non-negative integer, got {rrf_k!r}")
    ordered = _dense_order(candidates)
    lexical = bm25_scores(query_text or "", [c.text or "" for c in ordered])
    if fusion == "linear":
        top = lexical.max() if len(lexical) else 0.0
        fused = [c.score + (lexical_weight * lexical[i] / top if top > 0 else 0.0) for i, c in enumerate(ordered)]
    else:
        fused = [1.0 / (int(rrf_k) + pos) for pos in range(1, len(ordered) + 1)]
        # Only real lexical matches get a BM25 rank; otherwise every non-match would still earn a
        # lexical-rank bonus in arbitrary order. Stable sort: equal BM25 keeps dense order.
        matches = sorted((i for i in range(len(ordered)) if lexical[i] > 0), key=lambda i: -lexical[i])
        for pos, i in enumerate(matches, start=1):
            fused[i] += lexical_weight / (int(rrf_k) + pos)
    best = sorted(range(len(ordered)), key=lambda i: -fused[i])[:top_k]  # stable: ties in dense order
    return [(ordered[i].id, float(fused[i])) for i in best]


RANKERS = {"truncate": truncate, "mmr": mmr, "hybrid": hybrid}
# Public parameter name -> keyword argument; `lambda` is a Python keyword, hence `lambda_`.
RANKER_PARAMS = {"truncate": {}, "mmr": {"lambda": "lambda_"},
           "hybrid": {"fusion": "fusion", "lexical_weight": "lexical_weight", "rrf_k": "rrf_k"}}


def rank(
    name: str,
    *,
    query_text: str,
    query_vector,
    candidates: Sequence[Candidate],
    top_k: int,
    params: dict,
) -> list[tuple[str, float]]:
    if name not in RANKERS:
        raise RankError(f"unknown ranker {name!r} (known: {', '.join(sorted(RANKERS))})")
    names = RANKER_PARAMS[name]
    _reject_unknown(name, params or {}, tuple(names))
    kwargs = {names[k]: v for k, v in (params or {}).items()}
    query = query_text if name == "hybrid" else query_vector
    return RANKERS[name](query, candidates, top_k, **kwargs)
