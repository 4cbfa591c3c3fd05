"""How hits are shown to people: headline and snippet per document."""

from mmsearch.client.display import describe_document


def test_a_long_chinese_answer_is_cut_on_a_character_boundary():
    answer = "𠮷在升级系统之前，请先备份你的数据。" * 20  # 𠮷 is 4 UTF-8 bytes, the others 3: no byte count fits
    for snippet_chars in range(1, 40):
        title, snippet = describe_document({"id": "7", "question": "如何升级系统？", "answer": answer}, snippet_chars)
        assert title == "如何升级系统？"
        assert snippet == answer[:snippet_chars] + "…" and len(snippet) == snippet_chars + 1
        assert snippet.encode("utf-8").decode("utf-8") == snippet  # valid text, no half character


def test_a_short_chinese_answer_is_whole_and_a_document_without_text_keeps_its_characters():
    assert describe_document({"id": "1", "title": "基本定义", "text": "向量检索"}) == ("基本定义", "向量检索")
    assert describe_document({"id": "2", "chapter": "第一章"}) == ("", '{"chapter": "第一章"}')  # not \\u escapes
