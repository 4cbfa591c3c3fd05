import math

import pytest

from mmsearch.client.metrics import evaluate, ndcg_at, recall_at, reciprocal_rank


def test_metrics_on_hand_computed_rankings():
    ranked = ["a", "b", "c", "d"]
    assert recall_at(ranked, {"c"}, 1) == 0 and recall_at(ranked, {"c"}, 5) == 1
    assert reciprocal_rank(ranked, {"c"}) == pytest.approx(1 / 3)
    assert ndcg_at(ranked, {"c"}) == pytest.approx(1 / math.log2(4))
    assert ndcg_at(ranked, {"a", "b"}) == pytest.approx(1.0)


def test_evaluate_averages_over_queries():
    scores = evaluate([(["a", "b"], ["a"]), (["x", "y"], ["z"])])
    assert scores["recall@1"] == 0.5 and scores["mrr"] == 0.5 and scores["queries"] == 2
