"""The page's plain helpers, without a server."""

from io import BytesIO

from PIL import Image

from mmsearch.client.search_client import ClientError
from mmsearch.ui.page import BY_USER, THUMBNAIL_PX, escape_markdown, request_params, server_message, thumbnail


def test_request_params_always_ask_for_debug_and_carry_only_forced_arms_and_a_filter():
    assert request_params({"rank": BY_USER, "match": BY_USER}, "  ") == {"debug": True}
    assert request_params({"rank": "mmr", "match": BY_USER}, ' category == "x" ') == {
        "debug": True, "experiments": {"rank": "mmr"}, "filter": 'category == "x"'}


def test_document_text_is_shown_literally():
    assert escape_markdown("# 1. *not* [a](link) $x$") == r"\# 1\. \*not\* \[a\]\(link\) \$x\$"


def test_server_message_drops_the_grpc_status_prefix():
    error = ClientError("search failed: [StatusCode.INVALID_ARGUMENT] invalid filter: unexpected character")
    assert server_message(error) == "search failed: invalid filter: unexpected character"


def test_thumbnails_are_square_crops_of_local_files_or_the_url(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("RGB", (1200, 300), "red").save(path)
    picture = thumbnail({"path": str(path)})

    assert Image.open(BytesIO(picture)).size == (THUMBNAIL_PX, THUMBNAIL_PX)
    assert thumbnail({"url": "https://example.org/a.jpg", "path": ""}) == "https://example.org/a.jpg"
    assert thumbnail({"path": str(tmp_path / "gone.png")}) is None  # the page says it is not readable
    assert thumbnail(None) is None
