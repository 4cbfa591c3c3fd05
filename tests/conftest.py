"""Shared fixtures: real servers (tritonserver, Milvus, a MongoDB-wire server) started and
stopped by the tests themselves, and one exported model repository per session."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub here; never wait on its retries

from mmsearch.milvus_servers import milvus_server_healthy, start_milvus_server  # noqa: E402
from mmsearch.processes import free_port, port_is_open, start_ready  # noqa: E402
from mmsearch.settings import StoreSettings  # noqa: E402
from mmsearch.tritonserver import Ports, TritonServer  # noqa: E402

BIN = Path(sys.executable).parent
MONGO_START_S = 90


def mmsearch_cli(
    *args: str, check: bool = True, timeout: float = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run the installed `mmsearch` console script, as a user would."""
    result = subprocess.run(
        [str(BIN / "mmsearch"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"mmsearch {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


@pytest.fixture(scope="session")
def exported_repository(tmp_path_factory) -> Path:
    """all-MiniLM-L6-v2 exported through the real CLI into a python-backend repository."""
    repo = tmp_path_factory.mktemp("repo") / "repository"
    mmsearch_cli("export", "--repository", str(repo), "--backend", "python")
    return repo


class StoreServer:
    """A store server owned by the tests, on one port and one storage path for the session:
    start() again after stop() or kill() is the same server with the same data."""

    def __init__(self, base: Path):
        self.base, self.port, self.process = base, free_port(), None

    def stop(self) -> None:
        if self.process:
            self.process.stop(60)  # the storage path is reused only after it is gone
        self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: no chance to flush or close."""
        os.killpg(self.process.process.pid, signal.SIGKILL)
        self.process.stop(60)
        self.process = None


class MongoWireServer(StoreServer):
    """SecantusDB, a real MongoDB-wire server on WiredTiger."""

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def start(self) -> MongoWireServer:
        args = [str(BIN / "secantusd-py"), "--host", "127.0.0.1", "--port", str(self.port),
                "--storage-path", str(self.base / "data")]
        self.process = start_ready("secantusd-py", args, self.base / "secantusd.log",
                                   lambda: port_is_open("127.0.0.1", self.port), MONGO_START_S)
        return self


class MilvusServer(StoreServer):
    """The real Milvus 2.3 standalone server from the `milvus` wheel (embedded etcd, local storage)."""

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MilvusServer:
        self.process, _ = start_milvus_server(self.base / "data", self.base / "milvus-server.log", self.port)
        return self


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory):
    service = MongoWireServer(tmp_path_factory.mktemp("mongo")).start()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    if milvus_server_healthy():
        pytest.fail("a Milvus server is already running on :9091; stop it so the test owns its own")
    service = MilvusServer(tmp_path_factory.mktemp("milvus")).start()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def start_triton():
    """Start a TritonServer on free ports with given store settings; all are stopped at the end."""
    servers: list[TritonServer] = []

    def start(repository: Path, settings: StoreSettings, experiments: Path | None = None) -> TritonServer:
        server = TritonServer(repository, settings, Ports(free_port(), free_port(), free_port()), experiments)
        servers.append(server.start())
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def cli():
    return mmsearch_cli


# --- tiny CLIP ------------------------------------------------------------------------------
# No CLIP weights can be downloaded here, so tests build one: RANDOM weights, for tests only
# (its embeddings mean nothing). Everything around the weights is real: the architecture
# (transformers CLIPModel), openai/clip-vit-base-patch32's preprocessor_config.json verbatim,
# and a byte-level BPE tokenizer in CLIP's own vocab.json / merges.txt format, trained offline
# on chatterbot-corpus English text, so the export -> serve -> index -> search path runs on
# exactly the files a real checkpoint directory holds.

# openai/clip-vit-base-patch32/preprocessor_config.json, in its legacy (feature extractor) form.
OPENAI_CLIP_PREPROCESSOR_CONFIG = {
    "crop_size": 224,
    "do_center_crop": True,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "size": 224,
}
# CLIP's pre-tokenizer split (transformers' CLIPTokenizer uses the same regex).
_CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def _bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP byte -> printable character table, in CLIP's vocabulary order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in chars:
            chars[b], extra = chr(256 + extra), extra + 1
    return [chars[b] for b in [*printable, *(b for b in range(256) if b not in printable)]]


def build_tiny_clip(path: Path, *, merges: int = 1000, seed: int = 0) -> Path:
    """Save a tiny random CLIPModel + CLIPTokenizer + openai CLIP image processor config to `path`."""
    import json

    import chatterbot_corpus
    import torch
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "README.md").write_text("Tiny CLIP with RANDOM weights, built by tests/conftest.py. For tests only.\n")

    # Train merges with CLIP's own normalisation and pre-tokenisation, then write the files in
    # CLIP's layout: 256 byte symbols, the same with "</w>", one token per merge, the specials.
    trainer_tokenizer = Tokenizer(BPE(unk_token="<|endoftext|>", end_of_word_suffix="</w>"))
    trainer_tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    trainer_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    corpus = Path(chatterbot_corpus.__file__).parent / "data" / "english"
    texts = [p.read_text(encoding="utf-8") for p in sorted(corpus.glob("*.yml"))]
    trainer = BpeTrainer(
        vocab_size=4 * merges, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>", show_progress=False,
    )
    trainer_tokenizer.train_from_iterator(texts, trainer)
    merge_pairs = [tuple(m) for m in json.loads(trainer_tokenizer.to_str())["model"]["merges"]][:merges]
    byte_symbols = _bytes_to_unicode()
    tokens = [*byte_symbols, *(s + "</w>" for s in byte_symbols), *("".join(m) for m in merge_pairs),
              "<|startoftext|>", "<|endoftext|>"]
    (path / "vocab.json").write_text(
        json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False), encoding="utf-8"
    )
    (path / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merge_pairs), encoding="utf-8"
    )
    tokenizer = CLIPTokenizer.from_pretrained(str(path), model_max_length=77)  # pad = eos = <|endoftext|>
    tokenizer.save_pretrained(str(path))
    (path / "preprocessor_config.json").write_text(json.dumps(OPENAI_CLIP_PREPROCESSOR_CONFIG, indent=2) + "\n")

    torch.manual_seed(seed)
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, projection_dim=16)
    config = CLIPConfig(
        text_config=dict(
            **tower,
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(**tower, image_size=224, patch_size=32),
        projection_dim=16,
    )
    CLIPModel(config).eval().save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """A tiny random-weight CLIP checkpoint directory (see build_tiny_clip); tests only."""
    return build_tiny_clip(tmp_path_factory.mktemp("tiny_clip") / "tiny-clip")


@pytest.fixture(scope="session")
def clip_repository(tmp_path_factory, exported_repository, tiny_clip_dir):
    """Text (MiniLM) and the tiny CLIP in one repository: CLIP exported into a copy of the text
    one through the CLI. Returns the repository and the export run (its parity report)."""
    repo = tmp_path_factory.mktemp("clip-repo") / "repository"
    shutil.copytree(exported_repository, repo)
    export = mmsearch_cli(
        "export", "--clip-model", str(tiny_clip_dir), "--repository", str(repo), "--backend", "python"
    )
    return repo, export


@pytest.fixture(scope="session")
def tiny_clip_text_tower_dir(tmp_path_factory, tiny_clip_dir) -> Path:
    """A tiny random sentence-transformers text tower shaped like the multilingual CLIP ones
    (BERT -> mean pooling -> Dense projection to the CLIP space, here 16-d); tests only."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    from mmsearch.export.text_encoder import default_text_model

    base = tmp_path_factory.mktemp("tiny_text_tower")
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(default_text_model())  # a real WordPiece vocabulary
    bert = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=4, intermediate_size=37, max_position_embeddings=128))
    bert.save_pretrained(base / "bert")
    tokenizer.save_pretrained(base / "bert")
    model = SentenceTransformer(modules=[
        Transformer(str(base / "bert"), max_seq_length=128),
        Pooling(32, "mean"),
        Dense(32, 16, activation_function=torch.nn.Identity()),
    ], device="cpu")
    model.save(str(base / "tower"))
    return base / "tower"
