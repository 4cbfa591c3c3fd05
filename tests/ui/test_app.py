"""The search page under Streamlit's AppTest, against the real Triton of `ui_server`."""

from __future__ import annotations

import json
import re

import pytest
from streamlit.testing.v1 import AppTest

from mmsearch.client.search_client import SearchClient
from mmsearch.processes import free_port
from mmsearch.settings import ENV_PROTOCOL, ENV_URL
from mmsearch.ui import APP

pytestmark = pytest.mark.integration


def unescape(markdown: str) -> str:
    return re.sub(r"\\(.)", r"\1", markdown)


def texts(elements) -> list[str]:
    return [unescape(element.value) for element in elements]


@pytest.fixture
def page(ui_server, monkeypatch):
    """The page, opened against the test server; no test may leave a stack trace on it."""
    monkeypatch.setenv(ENV_URL, ui_server["url"])
    monkeypatch.setenv(ENV_PROTOCOL, "grpc")
    app = AppTest.from_file(str(APP), default_timeout=60)
    yield app.run()
    assert not app.exception, [e.value for e in app.exception]


def search(page: AppTest, query: str) -> AppTest:
    return page.text_input(key="query").input(query).run()


def raw_result(page: AppTest) -> dict:
    """The RESULT JSON the debug panel shows (its last st.json)."""
    return json.loads(page.json[-1].value)


def test_controls_list_what_the_server_has(page, ui_server):
    catalog = {c["name"]: c for c in SearchClient(ui_server["url"]).catalog()}
    collection = page.selectbox(key="collection")
    assert collection.options == [
        "debian_faq (text, 147) · scene faq", "debian_faq_zh (text, 147)", "photos (image, 16)"]
    assert page.sidebar.success[0].value == f"Triton ready at {ui_server['url']} (grpc)"
    assert any(e.label == "Models: 10 of 10 loaded" for e in page.sidebar.expander)
    sizes = page.sidebar.dataframe[-1].value
    assert dict(zip(sizes["collection"], sizes["size"], strict=True)) == {
        name: c["size"] for name, c in catalog.items()
    }
    assert page.number_input(key="top_k").value == 10
    assert page.sidebar.text_input(key="user_id").value == ""
    # the scene's arms are offered where there is a choice; single-arm layers are only named
    assert page.selectbox(key="arm_faq_rank").options == ["by user id", "truncate", "mmr"]
    assert [s.key for s in page.sidebar.selectbox if s.key.startswith("arm_")] == ["arm_faq_rank"]
    assert "Scene faq runs one arm in qp" in unescape(page.sidebar.caption[-1].value)
    assert "chapter" in page.sidebar.text_input(key="filter_debian_faq").placeholder
    assert not page.file_uploader  # a text collection takes no image query
    assert texts(page.main.caption)[-1] == "Type a query and press Enter."

    collection.set_value("photos").run()
    assert page.file_uploader[0].label == "…or search by image (image → image)"
    assert page.sidebar.text_input(key="filter_photos")


def test_text_search_shows_cards_with_the_expected_top_hit(page, ui_server):
    query, (top_id, top_title) = ui_server["query"], ui_server["top_hit"]
    search(page, query)
    assert not page.error
    assert any(c.startswith(f"10 hits for “{query}” in debian_faq · ") for c in texts(page.main.caption))
    markdown = texts(page.markdown)
    assert f"**1. {top_title}**" in markdown
    assert any(c.startswith("score 0.") and c.endswith(f"id {top_id}") for c in texts(page.main.caption))
    # the page shows what the server returns for the same request, in the same order
    shown = raw_result(page)
    direct = SearchClient(ui_server["url"]).search(query, "debian_faq", 10, params={"debug": True})
    assert [h["id"] for h in shown["hits"]] == [h["id"] for h in direct["hits"]]
    assert shown["hits"][0]["id"] == top_id
    titles = [m for m in markdown if re.match(r"\*\*\d+\. ", m)]
    assert titles == [f"**{i}. {h['document']['question']}**" for i, h in enumerate(direct["hits"], start=1)]
    # the debug panel: arms, stage timings and how the answer was made
    assert set(shown["timings_ms"]) == {"embed", "match", "rank", "summary", "total"}
    assert shown["debug"]["query_model"] == "text_embed"


def test_chinese_documents_are_shown_as_they_are_stored(page, ui_server):
    from mmsearch.client.display import describe_document

    page.selectbox(key="collection").set_value(ui_server["zh_collection"]).run()
    search(page, "如何升级我的 Debian 系统？")
    assert not page.error
    hits = raw_result(page)["hits"]
    markdown = texts(page.markdown)
    titles = [m for m in markdown if re.match(r"\*\*\d+\. ", m)]
    assert titles == [f"**{i}. {h['document']['question']}**" for i, h in enumerate(hits, start=1)]
    assert any("Debian" in t and re.search(r"[\u4e00-\u9fff]", t) for t in titles)
    for hit in hits:  # snippets: the stored answer's first characters, cut on a character
        assert describe_document(hit["document"], 240)[1] in markdown


def test_top_k_user_id_forced_arm_and_filter_reach_the_server(page, ui_server):
    page.number_input(key="top_k").set_value(3)
    page.sidebar.text_input(key="user_id").input("alice")
    page.selectbox(key="arm_faq_rank").set_value("mmr")
    page.sidebar.text_input(key="filter_debian_faq").input('chapter != "The Debian archives"')
    search(page, ui_server["query"])
    result = raw_result(page)
    assert len(result["hits"]) == 3
    assert result["experiments"]["rank"] == "mmr"
    assert result["debug"]["filter"] == 'chapter != "The Debian archives"'
    assert ui_server["top_hit"][0] not in [h["id"] for h in result["hits"]]  # its chapter is filtered out
    assert all(h["document"]["chapter"] != "The Debian archives" for h in result["hits"])
    assert 'With filter chapter != "The Debian archives"; rank forced to mmr.' in texts(page.main.caption)


def test_image_search_shows_a_grid_of_thumbnails(page, ui_server):
    page.selectbox(key="collection").set_value("photos").run()
    search(page, "a cat")
    assert len(page.get("image")) == 10
    # image -> image: the uploaded photo finds itself first
    photo = ui_server["photos"] / "astronaut.png"
    page.file_uploader[0].set_value((photo.name, photo.read_bytes(), "image/png")).run()
    result = raw_result(page)
    assert result["query_modality"] == "image" and result["hits"][0]["id"] == "astronaut.png"
    assert result["hits"][0]["score"] >= 0.999
    assert "Searching by the uploaded image; remove it to search by text." in texts(page.main.caption)


# ------------------------------------------------------------------ error states: a message, never a trace


def test_server_down_is_a_message(page):
    page.sidebar.text_input(key="url").input(f"localhost:{free_port()}").run()
    assert "is not reachable or not ready: start it with `mmsearch serve`" in page.error[0].value
    assert page.sidebar.error[0].value.endswith("(grpc) is not reachable")
    assert "query" not in [w.key for w in page.text_input]  # nothing to search with


def test_bad_filter_is_a_message_and_the_next_search_works(page, ui_server):
    page.sidebar.text_input(key="filter_debian_faq").input('chapter = "x" or')
    search(page, ui_server["query"])
    assert page.error[0].value == "search failed: invalid filter: unexpected character '=' at position 7"
    page.sidebar.text_input(key="filter_debian_faq").input("").run()
    assert not page.error and raw_result(page)["hits"][0]["id"] == ui_server["top_hit"][0]


def test_unknown_filter_field_names_the_known_ones(page):
    page.sidebar.text_input(key="filter_debian_faq").input('colour == "red"')
    search(page, "source code")
    assert "unknown field 'colour'" in page.error[0].value and "chapter" in page.error[0].value


def test_unreadable_upload_is_a_message(page, ui_server):
    page.selectbox(key="collection").set_value("photos").run()
    truncated = (ui_server["photos"] / "rocket.jpg").read_bytes()[:3000]
    page.file_uploader[0].set_value(("broken.jpg", truncated, "image/jpeg")).run()
    message = page.error[0].value
    assert message.startswith("Could not search with broken.jpg: ") and "corrupt or truncated image" in message


def test_huge_query_is_a_message(page):
    search(page, "why " * 1000)
    assert page.error[0].value == "search failed: QUERY is 4000 characters long; the limit is 2048"
