"""Retrieval metrics over ranked id lists: Recall@k, MRR and nDCG@10 (binary relevance)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

RECALL_CUTOFFS = (1, 5, 10)


def recall_at(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    return len(set(ranked[:k]) & relevant) / len(relevant) if relevant else 0.0


def reciprocal_rank(ranked: Sequence[str], relevant: set[str]) -> float:
    return next((1.0 / rank for rank, doc_id in enumerate(ranked, start=1) if doc_id in relevant), 0.0)


def ndcg_at(ranked: Sequence[str], relevant: set[str], k: int = 10) -> float:
    dcg = sum(1.0 / math.log2(rank + 1) for rank, doc_id in enumerate(ranked[:k], start=1) if doc_id in relevant)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(relevant), k) + 1))
    return dcg / ideal if ideal else 0.0


def evaluate(runs: Iterable[tuple[Sequence[str], Iterable[str]]]) -> dict[str, float]:
    """Mean metrics over (ranked ids, relevant ids) pairs."""
    totals: dict[str, float] = {f"recall@{k}": 0.0 for k in RECALL_CUTOFFS} | {"mrr": 0.0, "ndcg@10": 0.0}
    count = 0
    for ranked, relevant in runs:
        relevant = set(relevant)
        count += 1
        for k in RECALL_CUTOFFS:
            totals[f"recall@{k}"] += recall_at(ranked, relevant, k)
        totals["mrr"] += reciprocal_rank(ranked, relevant)
        totals["ndcg@10"] += ndcg_at(ranked, relevant, 10)
    return {name: round(value / count, 4) if count else 0.0 for name, value in totals.items()} | {"queries": count}


def evaluate_served(client, records: Sequence[dict], collection: str, settings: Sequence[dict[str, str]]) -> list[dict]:
    """One row of metrics per forced-arm setting ({} = the arms users are assigned), from the
    served top 10 of each judged query ({"query": ..., "relevant": [ids]})."""
    from mmsearch.client.search_client import search_params

    rows = []
    for forced in settings:
        params = search_params(forced)
        runs = [
            (
                [hit["id"] for hit in client.search(r["query"], collection, 10, params=params)["hits"]],
                r.get("relevant", []),
            )
            for r in records
        ]
        label = ",".join(f"{layer}={arm}" for layer, arm in forced.items()) or "assigned"
        rows.append({"experiments": label, **evaluate(runs)})
    return rows


def format_table(rows: Sequence[dict]) -> str:
    names = [k for k in rows[0] if k != "experiments"]
    width = max(len(row["experiments"]) for row in [*rows, {"experiments": "experiments"}])
    lines = [f"{'experiments':<{width}}  " + "  ".join(f"{n:>9}" for n in names)]
    lines += [f"{row['experiments']:<{width}}  " + "  ".join(f"{row[n]:>9}" for n in names) for row in rows]
    return "\n".join(lines)
