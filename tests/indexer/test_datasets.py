"""Real corpora: the installed Debian FAQ and the chatterbot English corpus."""
import json

import pytest

from mmsearch.indexer import datasets
from mmsearch.indexer.datasets import FaqDataset, chatterbot_english, debian_faq, write_jsonl


@pytest.fixture(scope="module")
def faq() -> FaqDataset:
    try:
        return debian_faq()
    except FileNotFoundError as e:  # `make test` installs debian-faq first
        pytest.fail(str(e))


def test_faq_documents(faq):
    docs = faq.documents
    assert len(docs) >= 100
    ids = [d["id"] for d in docs]
    assert len(set(ids)) == len(ids)
    for d in docs:
        assert d["id"].startswith("faq-") and d["question"] and d["answer"] and d["chapter"]
        assert d["answer"] == " ".join(d["answer"].split())  # whitespace-normalised
    by_id = {d["id"]: d for d in docs}
    assert by_id["faq-1.2"]["question"] == "What is Debian GNU/Linux?"
    assert "distribution" in by_id["faq-1.2"]["answer"]
    assert by_id["faq-1.2"]["chapter"] == "Definitions and overview"
    # Deep sections are found; navigation, TOC and footnote text are not body text.
    assert "faq-12.2.1.1" in by_id
    assert not any("Table of Contents" in d["answer"] or "[1]" in d["answer"] for d in docs)
    assert len({d["chapter"] for d in docs}) >= 10


def test_faq_queries_align(faq):
    ids = {d["id"] for d in faq.documents}
    question = {d["id"]: d["question"] for d in faq.documents}
    assert len(faq.queries) >= 100
    assert len({q["query"] for q in faq.queries}) == len(faq.queries)
    covered = set()
    for q in faq.queries:
        assert q["relevant"] and set(q["relevant"]) <= ids
        assert all(question[i] == q["query"] for i in q["relevant"])
        covered.update(q["relevant"])
    assert covered == ids  # every document is the answer to some query


def test_faq_missing_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install"):
        debian_faq(root=tmp_path)
    with pytest.raises(NotImplementedError):
        debian_faq(lang="xx")


def test_faq_parser_on_snippet(tmp_path):
    (tmp_path / "c.en.html").write_text(
        '<div class="navheader"><a>Prev</a></div>'
        '<h1 class="title"><a id="c"></a>Chapter 2. Things</h1>'
        '<div class="toc"><dl><dt>2.1. Q one?</dt></dl></div>'
        '<h2 class="title"><a id="a"></a>2.1.\u00a0Q one?</h2><p>Use <code>apt</code>,'
        ' then<br/>reboot.<a class="footnote"><sup class="footnote">[1]</sup></a></p>'
        '<h2 class="title">2.2. Only a header</h2>'
        '<h3 class="title">2.2.1. Q two?</h3><ul><li>a</li><li>b</li></ul>'
        '<div class="footnotes"><p>[1] note</p></div>', encoding="utf-8")
    ds = debian_faq(root=tmp_path)
    assert ds.documents == [
        {"id": "faq-2.1", "question": "Q one?", "answer": "Use apt, then reboot.", "chapter": "Things"},
        {"id": "faq-2.2.1", "question": "Q two?", "answer": "a b", "chapter": "Things"},
    ]
    assert ds.queries == [{"query": "Q one?", "relevant": ["faq-2.1"]},
                          {"query": "Q two?", "relevant": ["faq-2.2.1"]}]


def test_chatterbot_english():
    docs = chatterbot_english()
    assert len(docs) > 100
    ids = [d["id"] for d in docs]
    assert len(set(ids)) == len(ids)
    assert all(d["question"] and d["answer"] and d["category"] for d in docs)
    assert {"ai", "trivia"} <= {d["category"] for d in docs}
    assert docs == chatterbot_english()  # deterministic


def test_write_jsonl(tmp_path):
    docs = [{"id": "a", "answer": "café"}, {"id": "b", "answer": "x"}]
    path = write_jsonl(docs, tmp_path / "sub" / "docs.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == docs
    assert "café" in lines[0]


def test_zh_if_installed():
    if not (datasets.FAQ_DIR / "zh-cn").is_dir():
        pytest.skip("debian-faq-zh-cn not installed")
    ds = debian_faq(lang="zh")
    assert len(ds.documents) >= 100 and ds.documents[0]["id"] == "faq-1.1"


def test_debian_doc_pairs_are_titles_to_their_text_outside_the_faq(faq):
    try:
        pairs = datasets.debian_doc_pairs()
    except FileNotFoundError as e:  # `make test` installs debian-reference-en and debian-handbook first
        pytest.fail(str(e))
    assert len(pairs) >= 800
    assert {p["source"].split()[0] for p in pairs} == {"debian-reference", "debian-handbook"}
    assert len({p["query"].lower() for p in pairs}) == len(pairs)  # no pair is another's in-batch negative
    assert all(datasets.PAIR_MIN_WORDS <= len(p["positive"].split()) <= datasets.PAIR_MAX_WORDS for p in pairs)
    faq_answers = {d["answer"][:100] for d in faq.documents}
    assert not any(p["positive"][:100] in faq_answers for p in pairs)


def test_debian_doc_pairs_name_the_missing_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install -y debian-reference-en"):
        datasets.debian_doc_pairs({"debian-reference": tmp_path})
