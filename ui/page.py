"""The search page: where an engineer tries queries, forces experiment arms and reads why a
result came back.

It talks to Triton only through `SearchClient`, like the CLI: the collection list, their sizes
and the arms per layer come from the `search` model's catalog, so the page shows what the
server really has. Every failure (server down, bad filter, unreadable upload) becomes a message
on the page; the page never shows a stack trace.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from mmsearch.client.display import describe_document
from mmsearch.client.search_client import PROTOCOLS, ClientError, SearchClient, search_params
from mmsearch.model_repository.contract import DEFAULT_URL, LAYERS, MAX_TOP_K
from mmsearch.settings import ENV_PROTOCOL, ENV_URL

BY_USER = "by user id"  # the arm is the one the user's hash picks
THUMBNAIL_PX = 320
GRID_COLUMNS = 4
SNIPPET_CHARS = 240
STATUS_TTL_S = 10
IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"]
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


@dataclass
class ServerStatus:
    url: str
    protocol: str
    ready: bool = False
    models: dict[str, str] = field(default_factory=dict)
    collections: list[dict] = field(default_factory=list)
    error: str = ""


def escape_markdown(text: str) -> str:
    """Documents are user data: show their text literally, not as Markdown or LaTeX."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def request_params(forced: dict[str, str], filter_text: str) -> dict:
    """PARAMS for the search model: debug info always (the page shows it), forced arms, filter."""
    arms = {layer: arm for layer, arm in forced.items() if arm and arm != BY_USER}
    return search_params(arms, filter_text.strip(), debug=True)


def server_message(error: ClientError) -> str:
    """The server's own words, without the transport's status-code prefix."""
    return re.sub(r"\[StatusCode\.\w+\]\s*", "", str(error))


# Every widget change reruns the page; the catalog counts each collection in Milvus (in Milvus
# Lite, a scan in Python), so the status is read again at most every STATUS_TTL_S seconds, or
# at once on Refresh.
@st.cache_data(ttl=STATUS_TTL_S, show_spinner=False)
def read_status(url: str, protocol: str) -> ServerStatus:
    status = ServerStatus(url, protocol)
    try:
        with SearchClient(url, protocol, timeout_s=10.0) as client:
            status.ready = client.is_ready()
            if not status.ready:
                status.error = (
                    f"Triton at {url} ({protocol}) is not reachable or not ready: start it with `mmsearch serve`."
                )
                return status
            status.models = client.models()
            status.collections = client.catalog()
    except ClientError as exc:
        status.error = server_message(exc)
    return status


@st.cache_data(max_entries=1024, show_spinner=False)
def _thumbnail_of_file(path: str, modified_ns: int) -> bytes:
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        # Square crops keep the grid's rows and captions aligned whatever the aspect ratios.
        image = ImageOps.fit(ImageOps.exif_transpose(image).convert("RGB"), (THUMBNAIL_PX, THUMBNAIL_PX))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def thumbnail(document: dict | None) -> bytes | str | None:
    """What st.image shows for an image hit: its URL (the browser fetches it), a thumbnail of
    its local file, or None when this host cannot read the file."""
    if not document:
        return None
    if document.get("url"):
        return document["url"]
    try:
        path = Path(document.get("path", ""))
        return _thumbnail_of_file(str(path), path.stat().st_mtime_ns)
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- page parts


def server_panel(status: ServerStatus) -> None:
    st.subheader("Server")
    if status.ready and not status.error:
        st.success(f"Triton ready at {status.url} ({status.protocol})")
    elif status.ready:
        st.warning(f"Triton at {status.url} is up, but the search model cannot list collections")
    else:
        st.error(f"Triton at {status.url} ({status.protocol}) is not reachable")
    if status.models:
        loaded = sum(state == "READY" for state in status.models.values())
        with st.expander(f"Models: {loaded} of {len(status.models)} loaded"):
            st.dataframe(
                [{"model": name, "state": state} for name, state in sorted(status.models.items())], hide_index=True
            )
    if status.collections:
        st.dataframe(
            [{"collection": c["name"], "kind": c["modality"], "size": c["size"]} for c in status.collections],
            hide_index=True,
        )
    if st.button("Refresh", help="Read the server's status and collections again."):
        read_status.clear()
        st.rerun()


def tuning_panel(collection: dict) -> tuple[str, dict[str, str], str]:
    """User id, a forced arm per layer and a filter; the arms are the collection's scene's."""
    st.subheader("Experiments")
    user_id = st.text_input("User id", key="user_id", placeholder="anonymous",
                            help="Decides which arm of each layer this user gets (a salted hash).")
    forced, fixed = {}, []
    for layer in LAYERS:
        arms = collection["layers"].get(layer) or ["baseline"]
        if len(arms) < 2:  # nothing to force
            fixed.append(f"{layer} `{arms[0]}`")
            continue
        forced[layer] = st.selectbox(
            f"{layer} arm", [BY_USER, *arms], key=f"arm_{collection['scene']}_{layer}",
            help=f"Force an arm of the '{layer}' layer, or let the user id pick it.",
        )
    if not forced:
        st.caption(f"No experiments run on {escape_markdown(collection['name'])}: every layer has one arm.")
    elif fixed:
        st.caption(f"Scene {escape_markdown(collection['scene'])} runs one arm in " + ", ".join(fixed) + ".")
    fields = collection.get("fields") or []
    filter_text = st.text_input(
        "Filter", key=f"filter_{collection['name']}",
        placeholder=f'{fields[0]} == "…"' if fields else "no filterable fields",
        help="A scalar filter on indexed fields, e.g. category == \"install\" and year >= 2020. "
        f"Fields: {', '.join(fields) or 'none'}.",
    )
    return user_id, forced, filter_text


def collection_label(collection: dict) -> str:
    scene = f" · scene {collection['scene']}" if collection["scene"] != collection["name"] else ""
    return f"{collection['name']} ({collection['modality']}, {collection['size']:,}){scene}"


def text_hits(hits: list[dict]) -> None:
    for rank, hit in enumerate(hits, start=1):
        title, snippet = describe_document(hit["document"], SNIPPET_CHARS)
        with st.container(border=True):
            st.markdown(f"**{rank}. {escape_markdown(title or hit['id'])}**")
            if snippet:
                st.markdown(escape_markdown(snippet))
            st.caption(f"score {hit['score']:.3f} · id {escape_markdown(hit['id'])}")


def image_hits(hits: list[dict]) -> None:
    # One row of columns per GRID_COLUMNS hits: on a narrow screen Streamlit stacks columns,
    # and row by row the stacked order stays the rank order.
    for start in range(0, len(hits), GRID_COLUMNS):
        row = hits[start:start + GRID_COLUMNS]
        for rank, (column, hit) in enumerate(zip(st.columns(GRID_COLUMNS), row, strict=False), start=start + 1):
            name, _ = describe_document(hit["document"])
            caption = f"{rank}. {name or hit['id']} · {hit['score']:.3f}"
            with column:
                picture = thumbnail(hit["document"])
                if picture is None:
                    st.info(f"{caption}\n\n(image not readable from the UI host)")
                else:
                    st.image(picture, caption=caption, width="stretch")


def debug_panel(result: dict) -> None:
    with st.expander("Debug: arms, stage timings, raw result"):
        arms = result.get("experiments", {})
        st.markdown("**Arms** " + " · ".join(f"{layer} `{arm}`" for layer, arm in arms.items()))
        timings = {stage: ms for stage, ms in result.get("timings_ms", {}).items() if stage != "total"}
        if timings:
            st.markdown(f"**Stage timings** (total {result['timings_ms'].get('total', 0):.1f} ms)")
            st.bar_chart({"ms": timings}, horizontal=True, height=180)
        if result.get("debug"):
            st.markdown("**How the answer was made**")
            st.json(result["debug"])
        st.markdown("**RESULT JSON**")
        st.json(result, expanded=False)


def results(result: dict, modality: str) -> None:
    hits = result["hits"]
    asked = "the uploaded image" if result.get("query_modality") == "image" else f"“{escape_markdown(result['query'])}”"
    st.caption(f"{len(hits)} hits for {asked} in {escape_markdown(result['collection'])} · "
               f"{result['timings_ms'].get('total', 0):.1f} ms on the server")
    debug_panel(result)
    if not hits:
        st.info("No hits. A filter may exclude every document, or the collection is empty.")
    elif modality == "image":
        image_hits(hits)
    else:
        text_hits(hits)


def server_sidebar() -> tuple[str, str, ServerStatus]:
    """Where Triton is (from MMSEARCH_URL / MMSEARCH_PROTOCOL, editable) and what it serves."""
    with st.sidebar:
        url = st.text_input("Triton URL", value=os.environ.get(ENV_URL, DEFAULT_URL), key="url",
                            help="HOST:PORT of Triton's gRPC (or HTTP) endpoint.")
        default_protocol = os.environ.get(ENV_PROTOCOL, "grpc")
        protocol = st.selectbox("Protocol", PROTOCOLS, key="protocol",
                                index=PROTOCOLS.index(default_protocol) if default_protocol in PROTOCOLS else 0)
        status = read_status(url, protocol)
        server_panel(status)
    return url, protocol, status


def search_controls(status: ServerStatus) -> tuple[dict, str, int, object]:
    """The collection (its catalog entry), the query, top-k and an uploaded image (or None)."""
    by_name = {c["name"]: c for c in status.collections}
    query_column, collection_column, top_k_column = st.columns([4, 2, 1], vertical_alignment="bottom")
    with collection_column:
        name = st.selectbox(
            "Collection", list(by_name), format_func=lambda n: collection_label(by_name[n]), key="collection"
        )
    collection = by_name[name]
    with query_column:
        query = st.text_input("Query", key="query", placeholder="Ask in your own words, then press Enter")
    with top_k_column:
        top_k = int(st.number_input("Top k", min_value=1, max_value=MAX_TOP_K, value=10, step=1, key="top_k"))
    upload = None
    if "image" in collection["queries"]:
        upload = st.file_uploader("…or search by image (image → image)", type=IMAGE_TYPES, key=f"image_{name}")
    return collection, query, top_k, upload


def active_settings_caption(params: dict) -> None:
    """The tuning controls sit in the sidebar, hidden on a narrow screen: say what is on."""
    notes = [f"filter {escape_markdown(params['filter'])}"] if "filter" in params else []
    notes += [f"{layer} forced to {escape_markdown(arm)}" for layer, arm in params.get("experiments", {}).items()]
    if notes:
        st.caption("With " + "; ".join(notes) + ".")


def main() -> None:
    st.set_page_config(page_title="mmsearch", page_icon=":material/search:", layout="wide")
    url, protocol, status = server_sidebar()
    st.title("mmsearch", anchor=False)
    st.caption("Semantic search over text and images, served by Triton")
    if status.error:
        st.error(status.error)
        return
    if not status.collections:
        st.info("The server has no collections yet. Index one, e.g. "
                "`mmsearch index --input docs.jsonl --collection docs --text-field text`, then press Refresh.")
        return
    collection, query, top_k, upload = search_controls(status)
    with st.sidebar:
        user_id, forced, filter_text = tuning_panel(collection)
    if upload is None and not query.strip():
        st.caption(
            "Type a query and press Enter" + (", or upload an image." if "image" in collection["queries"] else ".")
        )
        return
    params = request_params(forced, filter_text)
    active_settings_caption(params)
    if upload is not None and query.strip():
        st.caption("Searching by the uploaded image; remove it to search by text.")
    try:
        with SearchClient(url, protocol) as client:
            result = client.search("" if upload else query, collection["name"], top_k, user_id=user_id or None,
                                   params=params, image=upload.getvalue() if upload else None)
    except ClientError as exc:
        prefix = f"Could not search with {upload.name}: " if upload else ""
        st.error(prefix + server_message(exc))
        return
    results(result, collection["modality"])
