"""Rank stage: hand-computed small cases for each ranker, edge cases, and error messages."""

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from mmsearch.model_repository.search.rankers import (
    RANKERS,
    Candidate,
    RankError,
    bm25_scores,
    hybrid,
    mmr,
    rank,
    tokenize,
    truncate,
)

Q = np.array([1.0, 0.0])


def cand(id_, xy, text=""):
    v = np.array(xy, dtype=np.float64)
    return Candidate(id_, float(v @ Q), v, text)


# a is the best match, b is a near-duplicate of a (sim 0.936), c and d point elsewhere.
A, B, C, D = cand("a", (0.96, 0.28)), cand("b", (0.8, 0.6)), cand("c", (0.6, -0.8)), cand("d", (0.28, -0.96))
VECTOR_SET = [A, B, C, D]


def ids(result):
    return [i for i, _ in result]


def assert_ranked(result, expected):
    assert ids(result) == ids(expected)
    assert [s for _, s in result] == pytest.approx([s for _, s in expected])


def test_truncate_orders_by_score_and_keeps_input_order_on_ties():
    cands = [Candidate("x", 0.5), Candidate("y", 0.9), Candidate("z", 0.5), Candidate("w", 0.1)]
    assert truncate(None, cands, 3) == [("y", 0.9), ("x", 0.5), ("z", 0.5)]


def test_mmr_demotes_near_duplicate():
    # λ=0.7. Step 1: a (highest score). Step 2 gains: b 0.7*0.8-0.3*0.936=0.2792,
    # c 0.7*0.6-0.3*0.352=0.3144, d 0.7*0.28-0.3*0=0.196 -> c. Step 3: b 0.2792,
    # d 0.196-0.3*sim(d,c)=0.196-0.3*0.936=-0.0848 -> b, then d.
    assert ids(truncate(Q, VECTOR_SET, 4)) == ["a", "b", "c", "d"]
    result = mmr(Q, VECTOR_SET, 4, lambda_=0.7)
    assert ids(result) == ["a", "c", "b", "d"]
    # Scores stay the dense ones so they remain comparable across rankers.
    assert_ranked(result, [("a", 0.96), ("c", 0.6), ("b", 0.8), ("d", 0.28)])
    assert ids(mmr(Q, VECTOR_SET, 2)) == ["a", "c"]  # default λ is 0.7


def test_mmr_lambda_zero_picks_most_dissimilar():
    # λ=0: first pick is a tie (all gains 0) -> best dense rank a; then -max sim: d (0) beats c (-0.352).
    assert ids(mmr(Q, VECTOR_SET, 2, lambda_=0.0)) == ["a", "d"]


@pytest.mark.parametrize("top_k", [0, 1, 3, 4, 10])
def test_mmr_lambda_one_equals_truncate(top_k):
    shuffled = [C, A, D, B]
    assert mmr(Q, shuffled, top_k, lambda_=1.0) == truncate(Q, shuffled, top_k)


def test_mmr_needs_vectors():
    with pytest.raises(RankError, match=r"mmr: candidate vectors are needed .*'x'"):
        mmr(Q, [A, Candidate("x", 0.5)], 2)
    with pytest.raises(RankError, match="differ in length"):
        mmr(Q, [A, Candidate("x", 0.5, np.array([1.0, 0.0, 0.0]))], 2)


def test_tokenize_lowercases_unicode_words():
    assert tokenize("Hello, Café-au-lait! NAÏVE 42") == ["hello", "café", "au", "lait", "naïve", "42"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("如何安装软件包。", ["如何", "何安", "安装", "装软", "软件", "件包"]),  # overlapping bigrams, no punctuation
        ("如何升级Debian系统？", ["如何", "何升", "升级", "debian", "系统"]),
        ("用apt-get安装Python 3包", ["用", "apt", "get", "安装", "python", "3", "包"]),  # lone characters stay
        ("東京タワーへ行く", ["東京", "京タ", "タワ", "ワー", "ーへ", "へ行", "行く"]),  # kanji and kana run on
        ("한국어 검색", ["한국", "국어", "검색"]),
    ],
    ids=["chinese", "mixed", "single-characters", "japanese", "korean"],
)
def test_tokenize_splits_cjk_runs_into_bigrams_and_keeps_other_words_whole(text, expected):
    assert tokenize(text) == expected


def test_bm25_matches_chinese_text_without_spaces():
    # Each text is one space-less run: as whole words, nothing but identical sentences would ever match.
    texts = ["安装软件包需要管理员权限。", "系统日志保存在这个目录里。", "升级系统之前请先备份数据。", "How to upgrade"]
    scores = bm25_scores("如何升级系统", texts)  # 如何 何升 升级 级系 系统
    assert scores[2] > scores[1] > 0  # shares 升级 级系 系统, then 系统 alone
    assert scores[0] == scores[3] == 0
    assert ids(hybrid("如何升级系统", [Candidate(str(i), 0.5, text=t) for i, t in enumerate(texts)], 2)) == ["2", "1"]


def test_bm25_matches_hand_computed_values():
    texts = ["the cat sat", "the dog", "Cat cat dog bird"]
    # N=3, avgdl=3. idf(cat)=ln(1+1.5/2.5)=ln 1.6, idf(bird)=ln(1+2.5/1.5)=ln(8/3).
    # doc0: tf=1, dl=3 -> 1*2.2/(1+1.2*1)=1. doc2: dl=4 -> norm=1.2*(0.25+0.75*4/3)=1.5;
    # cat tf=2 -> 4.4/3.5, bird tf=1 -> 2.2/2.5.
    expected = [math.log(1.6), 0.0, math.log(1.6) * 4.4 / 3.5 + math.log(8 / 3) * 2.2 / 2.5]
    assert bm25_scores("cat BIRD", texts) == pytest.approx(expected)
    assert bm25_scores("zebra", texts) == pytest.approx([0.0, 0.0, 0.0])
    assert bm25_scores("cat", ["", "", ""]) == pytest.approx([0.0, 0.0, 0.0])
    assert len(bm25_scores("cat", [])) == 0


def test_hybrid_lexical_match_moves_up():
    cands = [Candidate("x", 0.9, text="red apple"), Candidate("y", 0.8, text="green pear"),
             Candidate("z", 0.7, text="banana split")]
    # rrf_k=1: x 1/2, y 1/3, z dense 1/4 + lexical rank 1 1/2 = 0.75.
    assert_ranked(
        hybrid("Banana", cands, 3, fusion="rrf", lexical_weight=1.0, rrf_k=1), [("z", 0.75), ("x", 0.5), ("y", 1 / 3)]
    )
    # rrf_k=60: z 1/63+1/61 still beats x 1/61.
    assert ids(hybrid("banana", cands, 2, fusion="rrf", lexical_weight=1.0)) == ["z", "x"]
    # Default linear fusion, weight 0.2: z 0.7 + 0.2 * 1 = 0.9 ties x at 0.9 and x keeps dense order;
    # with weight 0.3 z passes x.
    assert_ranked(hybrid("banana", cands, 3), [("x", 0.9), ("z", 0.9), ("y", 0.8)])
    assert ids(hybrid("banana", cands, 1, lexical_weight=0.3)) == ["z"]


def test_hybrid_ties_broken_by_dense_order():
    cands = [Candidate("b", 0.9, text="nothing here"), Candidate("a", 0.8, text="cat and more words"),
             Candidate("c", 0.7, text="cat")]
    # rrf_k=0: c 1/3+1/1, b 1/1 (no match), a 1/2+1/2 = 1 -> a ties b, b is ahead in dense order.
    assert_ranked(
        hybrid("cat", cands, 3, fusion="rrf", lexical_weight=1.0, rrf_k=0), [("c", 4 / 3), ("b", 1.0), ("a", 1.0)]
    )


@pytest.mark.parametrize("fusion, expected", [("rrf", [("x", 1 / 61), ("z", 1 / 62), ("y", 1 / 63)]),
                                              ("linear", [("x", 0.9), ("z", 0.5), ("y", 0.2)])])
def test_hybrid_without_text_falls_back_to_dense_order(fusion, expected):
    cands = [Candidate("y", 0.2), Candidate("x", 0.9), Candidate("z", 0.5)]
    assert_ranked(hybrid("anything", cands, 3, fusion=fusion), expected)
    assert_ranked(hybrid("", [Candidate(c.id, c.score, text="some words") for c in cands], 3, fusion=fusion), expected)


@pytest.mark.parametrize("name", sorted(RANKERS))
def test_empty_and_short_candidate_lists(name):
    kw = dict(query_text="cat", query_vector=Q, params={})
    assert rank(name, candidates=[], top_k=5, **kw) == []
    cands = [
        Candidate("p", 0.4, np.array([0.4, np.sqrt(0.84)]), "cat"),
        Candidate("q", 0.9, np.array([0.9, np.sqrt(0.19)])),
    ]
    result = rank(name, candidates=cands, top_k=10, **kw)
    assert sorted(ids(result)) == ["p", "q"]
    assert rank(name, candidates=cands, top_k=0, **kw) == []
    assert len(rank(name, candidates=cands, top_k=1, **kw)) == 1


def test_rank_dispatches_params():
    assert rank("mmr", query_text="", query_vector=Q, candidates=VECTOR_SET, top_k=4,
                params={"lambda": 0.7}) == mmr(Q, VECTOR_SET, 4, lambda_=0.7)
    cands = [Candidate("x", 0.9, text="red"), Candidate("z", 0.7, text="banana")]
    assert rank("hybrid", query_text="banana", query_vector=None, candidates=cands, top_k=2,
                params={"rrf_k": 1, "fusion": "rrf"}) == hybrid("banana", cands, 2, fusion="rrf", rrf_k=1)
    assert rank("truncate", query_text="", query_vector=None, candidates=cands, top_k=1, params={}) == [("x", 0.9)]


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("foo", {}, "unknown ranker 'foo' (known: hybrid, mmr, truncate)"),
        ("mmr", {"lambda": 1.5}, "mmr: lambda must be between 0 and 1, got 1.5"),
        ("mmr", {"lambda": -0.1}, "mmr: lambda must be between 0 and 1, got -0.1"),
        ("mmr", {"lambda": float("nan")}, "mmr: lambda must be between 0 and 1, got nan"),
        ("mmr", {"lambda": "0.5"}, "mmr: lambda must be a number, got '0.5'"),
        ("mmr", {"lambda_": 0.5}, "mmr: unknown parameter 'lambda_' (known: lambda)"),
        ("hybrid", {"kk": 3}, "hybrid: unknown parameter 'kk' (known: fusion, lexical_weight, rrf_k)"),
        ("hybrid", {"rrf_k": -1}, "hybrid: rrf_k must be a non-negative integer, got -1"),
        ("hybrid", {"fusion": "max"}, "hybrid: fusion must be one of linear, rrf, got 'max'"),
        ("hybrid", {"lexical_weight": -0.1}, "hybrid: lexical_weight must be a non-negative number, got -0.1"),
        ("hybrid", {"rrf_k": 60.5}, "hybrid: rrf_k must be a non-negative integer, got 60.5"),
        ("truncate", {"b": 1, "a": 2},
         "truncate: unknown parameters 'a', 'b' (known: none)"),
    ],
)
def test_rank_errors_name_the_problem(name, params, message):
    with pytest.raises(RankError) as err:
        rank(name, query_text="q", query_vector=Q, candidates=VECTOR_SET, top_k=2, params=params)
    assert str(err.value) == message


def test_bad_top_k_and_direct_unknown_keyword():
    with pytest.raises(RankError, match="truncate: top_k must be a non-negative integer, got -1"):
        truncate(Q, VECTOR_SET, -1)
    with pytest.raises(RankError, match="mmr: unknown parameter 'lam'"):
        mmr(Q, VECTOR_SET, 2, lam=0.5)


@pytest.mark.parametrize("name", sorted(RANKERS))
def test_deterministic_across_input_order_and_threads(name):
    texts = ["cat sat", "dog", "cat cat", "bird cat", "", "dog cat"]
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(len(texts), 8))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    q = vecs[0] * 0.6 + vecs[1] * 0.4
    cands = [Candidate(f"id{i}", float(v @ q), v, t) for i, (v, t) in enumerate(zip(vecs, texts, strict=True))]

    def run(order):
        return rank(name, query_text="cat", query_vector=q, candidates=[cands[i] for i in order],
                    top_k=4, params={})

    expected = run(range(len(cands)))
    orders = [rng.permutation(len(cands)) for _ in range(32)]
    with ThreadPoolExecutor(8) as pool:
        assert all(r == expected for r in pool.map(run, orders))
