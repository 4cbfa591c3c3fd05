"""`mmsearch demo`: export, serve, index a Q&A corpus (and photos, with CLIP), search, open the page."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from mmsearch.client.display import format_result
from mmsearch.client.search_client import SearchClient, connect
from mmsearch.export.build import DEFAULT_CLIP_MODEL, ensure_clip, ensure_multilingual, ensure_text_repository
from mmsearch.indexer.pipeline import IndexOptions
from mmsearch.indexer.run import run_index
from mmsearch.model_repository.contract import DEFAULT_UI_PORT
from mmsearch.processes import check_port_free, run_until_signalled
from mmsearch.settings import StoreSettings
from mmsearch.tritonserver import Ports, TritonServer

QUERIES = ("what is artificial intelligence", "tell me a joke", "do you like music", "how old are you")
IMAGE_QUERY = "a cat"
TEXT_COLLECTION, IMAGE_COLLECTION = "chatterbot", "photos"
# --lang zh: the Chinese Debian FAQ through USE-multilingual; the last query asks it in English.
ZH_QUERIES = ("如何升级我的 Debian 系统？", "Debian 是什么？", "怎样安装新的软件包？", "How do I upgrade my system?")
ZH_COLLECTION = "debian_faq_zh"


@dataclass(frozen=True)
class DemoOptions:
    settings: StoreSettings
    ports: Ports = Ports()
    repository: Path | None = None  # default: <data dir>/repository, exported on first run
    clip_model: str = DEFAULT_CLIP_MODEL
    ui_port: int = DEFAULT_UI_PORT  # 0: no search page
    exit_after: bool = False  # stop after the example searches instead of serving on
    lang: str = "en"  # zh: the Chinese FAQ, embedded by USE-multilingual, instead of chatterbot


def run_demo(options: DemoOptions) -> None:
    if options.ui_port:
        check_port_free(options.ui_port, "--ui-port")  # before minutes of export, not after
    settings = options.settings
    repository = options.repository or settings.data_dir / "repository"
    ensure_text_repository(repository)
    multilingual = ensure_multilingual(repository) if options.lang == "zh" else None
    with_images = ensure_clip(repository, options.clip_model)
    server = TritonServer(repository, settings, options.ports)
    print(f"starting tritonserver on {server.repository} (log: {server.log_path})", flush=True)
    server.start()
    page = None
    try:
        client = connect(f"localhost:{options.ports.grpc}")
        collection, queries = search_text(client, settings, multilingual)
        if options.ui_port:
            page = start_page_for(options)
        for query in queries:
            print(f"\n{format_result(client.search(query, collection, top_k=3))}", flush=True)
        if with_images:
            search_images(client, settings)
        if not options.exit_after:
            print(instructions(options, with_images, page is not None), flush=True)
            run_until_signalled()
    finally:
        if page:
            page.stop()
        print("stopping tritonserver", flush=True)
        server.stop()


def search_text(client: SearchClient, settings: StoreSettings, multilingual: str | None) -> tuple[str, tuple]:
    """Index the demo's text corpus; returns the collection and the queries to show."""
    from mmsearch.indexer.datasets import chatterbot_english, write_faq, write_jsonl

    if multilingual:
        corpus, _ = write_faq(settings.data_dir, "zh")
        options, queries = IndexOptions(ZH_COLLECTION, text_field="answer", model=multilingual), ZH_QUERIES
    else:
        corpus = write_jsonl(chatterbot_english(), settings.data_dir / "chatterbot-english.jsonl")
        options, queries = IndexOptions(TEXT_COLLECTION, text_field="question"), QUERIES
    print(run_index(client, settings, corpus, options, progress=sys.stderr.isatty()).summary(), flush=True)
    return options.collection, queries


def start_page_for(options: DemoOptions):
    from mmsearch.ui import start_page

    page = start_page(f"localhost:{options.ports.grpc}", "grpc", options.ui_port,
                      options.settings.data_dir / "logs" / "streamlit.log")
    print(f"search page: http://localhost:{options.ui_port}", flush=True)
    return page


def search_images(client: SearchClient, settings: StoreSettings) -> None:
    from mmsearch.indexer.datasets import sample_photos

    photos = sample_photos(settings.data_dir / "photos")
    report = run_index(
        client, settings, photos, IndexOptions(IMAGE_COLLECTION, modality="image"), progress=sys.stderr.isatty()
    )
    print(f"\n{report.summary()}\n", flush=True)
    print(format_result(client.search(IMAGE_QUERY, IMAGE_COLLECTION, top_k=3)), flush=True)
    example = sorted(photos.iterdir())[0]
    print(f"\nimage -> image with {example.name}:", flush=True)
    print(format_result(client.search("", IMAGE_COLLECTION, top_k=3, image=example.read_bytes())), flush=True)


def instructions(options: DemoOptions, with_images: bool, with_page: bool) -> str:
    grpc, http = options.ports.grpc, options.ports.http
    return (
        f"\nTriton is serving on gRPC localhost:{grpc} and HTTP localhost:{http}. Try, in another terminal:\n"
        + (f"  .venv/bin/mmsearch search '可以自动升级系统吗？' --collection {ZH_COLLECTION}\n" if options.lang == "zh"
           else f"  .venv/bin/mmsearch search 'what is your favourite food' --collection {TEXT_COLLECTION}\n")
        + (f"  .venv/bin/mmsearch search 'a red bird' --collection {IMAGE_COLLECTION}\n" if with_images else "")
        + f"  curl -s localhost:{http}/v2/models/search/config\n"
        + (f"Search page: http://localhost:{options.ui_port}\n" if with_page else "")
        + "Press Ctrl-C to stop."
    )
