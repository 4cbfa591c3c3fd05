"""Search results for people: a headline and snippet per hit, and the terminal listing."""

from __future__ import annotations

import json


def describe_document(document: dict | None, snippet_chars: int = 160) -> tuple[str, str]:
    """A headline and a snippet for showing a hit to a person (terminal or UI)."""
    if not document:
        return "(document missing from the store)", ""
    if "width" in document and "height" in document:  # an image: where it is and its size
        where = document.get("url") or document.get("path")
        return document.get("file_name", ""), f"{where} ({document['width']}x{document['height']})"
    fields = [k for k in ("title", "question", "name") if isinstance(document.get(k), str)]
    texts = [k for k in ("answer", "text", "body", "content", "description") if isinstance(document.get(k), str)]
    title = document[fields[0]] if fields else ""
    snippet = (document[texts[0]] if texts
               else json.dumps({k: v for k, v in document.items() if k != "id"}, ensure_ascii=False))
    return title, (snippet[:snippet_chars] + "…") if len(snippet) > snippet_chars else snippet


def format_result(result: dict) -> str:
    """A result JSON as the terminal lists it: a line per hit and its snippet below."""
    hits = result["hits"]
    asked = "the image" if result.get("query_modality") == "image" else repr(result["query"])
    lines = [f"{len(hits)} hits for {asked} in {result['collection']} ({result['timings_ms'].get('total', 0):.1f} ms)"]
    for rank, hit in enumerate(hits, start=1):
        title, snippet = describe_document(hit["document"])
        lines.append(f"{rank:>3}. {hit['score']:.3f}  [{hit['id']}] {title}")
        if snippet:
            lines.append(f"        {snippet}")
    return "\n".join(lines)


def format_collections(rows: list[dict]) -> str:
    """`mmsearch collections` as a table: the live ones show the aliases users search."""
    if not rows:
        return "no collections"
    header = ("collection", "aliases", "model", "modality", "dim", "vectors")
    table = [header] + [(row["collection"], ", ".join(row["aliases"]) or "-", row["model"], row["modality"],
                         str(row["dim"]), str(row["vectors"])) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
                     for line in table)
