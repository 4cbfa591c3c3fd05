"""Filters: parsed, validated and re-written, so nothing verbatim reaches Milvus."""

import numpy as np
import pytest

from mmsearch.model_repository.search.filters import FilterError, combine, compile_filter

FIELDS = {"category", "year", "chapter", "draft"}


@pytest.mark.parametrize(
    "text, expected",
    [
        ('category == "install"', 'category == "install"'),
        ("category == 'install'", 'category == "install"'),
        ('year >= 2020 and category != "faq"', '(year >= 2020 and category != "faq")'),
        ('category in ["a", "b"] or not draft == true', '(category in ["a", "b"] or not (draft == true))'),
        ('chapter not in [1, 2.5]', "chapter not in [1, 2.5]"),
        ('(year < 3 or year > 9) and draft == FALSE', "((year < 3 or year > 9) and draft == false)"),
        ('category == "say \\"hi\\""', 'category == "say \\"hi\\""'),
        ("   ", ""),
    ],
)
def test_valid_filters_become_canonical_expressions(text, expected):
    assert compile_filter(text, FIELDS) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ('chapter == "基本定义"', 'chapter == "基本定义"'),
        ("chapter in ['第一章', '基本定义'] and category != 'ＦＡＱ'",
         '(chapter in ["第一章", "基本定义"] and category != "ＦＡＱ")'),
        ("chapter == '说\"你好\"'", 'chapter == "说\\"你好\\""'),  # the quote escaped, the rest as typed
        (r'chapter == "\u57fa\u672c"', 'chapter == "基本"'),  # an escape is decoded, written as the character
        ('chapter\u3000==\u3000"第一章"\u3000', 'chapter == "第一章"'),  # ideographic spaces separate like spaces
    ],
)
def test_non_ascii_values_reach_the_expression_intact(text, expected):
    assert compile_filter(text, FIELDS) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ('category == "a") or (1 == 1', "unexpected '\\)' after a complete filter"),
        ('category == "a" || true', "unexpected character '\\|'"),
        ('secret == 1', "unknown field 'secret' \\(filterable fields: category, chapter, draft, year\\)"),
        ('category ==', "expected a value but found the end"),
        ('category = "a"', "unexpected character '='"),
        ('and == 1', "expected a field name but found 'and'"),
        ('category == other_field', "expected a value .* but found 'other_field'"),
        ('category in "a"', "expected \\[ but found"),
        ('x' * 1001, "the limit is 1000"),
    ],
)
def test_invalid_filters_are_refused_with_a_reason(text, message):
    with pytest.raises(FilterError, match=message):
        compile_filter(text, FIELDS)


def test_combine_ands_non_empty_parts():
    assert combine("a == 1", "", "b == 2") == "(a == 1) and (b == 2)"
    assert combine("", "a == 1") == "a == 1" and combine() == ""


def test_compiled_filters_run_on_milvus_lite(tmp_path):
    from mmsearch.model_repository.contract import CollectionInfo
    from mmsearch.stores import VectorStore

    store = VectorStore(str(tmp_path / "m.db"))
    store.ensure_collection("c", CollectionInfo(dim=2))
    docs = [
        {"id": str(i), "category": c, "year": y}
        for i, (c, y) in enumerate([("install", 2019), ("install", 2021), ('say "hi"', 2022), ("基本定义", 2023),
                                    ('说"你好"', 2024)])
    ]
    store.upsert("c", [d["id"] for d in docs], np.eye(5, 2, dtype=np.float32) + 0.1, docs, skip=set())
    store.flush("c")
    for text, ids in [
        ('category == "install" and year > 2020', {"1"}),
        ("category == 'say \"hi\"'", {"2"}),
        ("year in [2019, 2022]", {"0", "2"}),
        ('category == "基本定义"', {"3"}),
        ("category in ['基本定义', '说\"你好\"']", {"3", "4"}),
    ]:
        hits = store.search(
            "c", np.array([1.0, 0.0], dtype=np.float32), 10, filter=compile_filter(text, {"category", "year"})
        )
        assert {hit.id for hit in hits} == ids, text


@pytest.mark.parametrize(
    "text, message",
    [
        ("year == 99999999999999999999", "integer 99999999999999999999 is outside the 64-bit range"),
        ("year > -9223372036854775809", "outside the 64-bit range"),
        ("year < 1e999", "not a finite 64-bit float"),
        ('category == "a\x00b"', "holds a control character"),
        ('category == "a\\x00b"', "holds a control character"),
        ("not " * 240 + "year == 1", "nested more than 32 levels deep"),
        ("(" * 33 + "year == 1" + ")" * 33, "nested more than 32 levels deep"),
    ],
)
def test_filters_milvus_would_reject_are_refused_here_as_invalid(text, message):
    # Each of these once reached Milvus, which rejected it, and was reported as a store outage.
    with pytest.raises(FilterError, match=message):
        compile_filter(text, FIELDS)


def test_the_extremes_milvus_holds_still_compile():
    assert compile_filter("year >= -9223372036854775808 and year <= 9223372036854775807", FIELDS)
    assert compile_filter("not " * 31 + "year == 1", FIELDS).count("not") == 31
    assert compile_filter('category == "日本語"', FIELDS) == 'category == "日本語"'
