"""`mmsearch tune`: bad pairs, bad models and bad options are one clear error; a short real run
on the MiniLM we ship writes a model directory that `mmsearch export` takes as it is."""

import json

import pytest

from mmsearch.export.tune import Pair, TuneError, TuneOptions, load_bi_encoder, read_pairs, split_dev, tune

TOPICS = ["apt upgrades", "kernel modules", "printer drivers", "mail servers", "disk partitions", "network bridges",
          "sound cards", "user accounts", "boot loaders", "firewall rules", "time zones", "screen readers"]


def write(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def pairs_for(n):
    return [{"query": f"how do I manage {TOPICS[i % len(TOPICS)]} ({i})",
             "positive": f"Section {i} explains {TOPICS[i % len(TOPICS)]} on Debian, step by step."} for i in range(n)]


@pytest.mark.parametrize("lines, message", [
    ([], "holds no pairs"),
    ([{"query": "a", "positive": "b"}, "{not json"], r"pairs.jsonl:2: invalid JSON"),
    ([{"query": "a"}], r"pairs.jsonl:1: needs a non-empty string field 'positive'"),
    ([{"query": " ", "positive": "b"}], r"pairs.jsonl:1: needs a non-empty string field 'query'"),
    ([{"query": "a", "positive": "b"}, {"query": "c", "positive": "d", "negative": 3}], r":2: 'negative', when given"),
])
def test_bad_pairs_files_name_the_line(tmp_path, lines, message):
    with pytest.raises(TuneError, match=message):
        read_pairs(write(tmp_path / "pairs.jsonl", lines))


def test_too_few_pairs_for_a_batch_is_refused_before_loading_a_model(tmp_path):
    path = write(tmp_path / "pairs.jsonl", pairs_for(30))
    with pytest.raises(TuneError, match=r"30 pairs leave 22 for training after the 8 held out .* batch of 32"):
        tune(TuneOptions(tmp_path / "out", pairs=path, base_model=str(tmp_path / "never-loaded")), progress=False)


@pytest.mark.parametrize("options, message", [
    ({}, "give one of --pairs FILE or --corpus NAME"),
    ({"corpus": "debian-docs", "pairs": "x.jsonl"}, "give one of --pairs FILE or --corpus NAME"),
])
def test_pairs_come_from_one_place(tmp_path, options, message):
    with pytest.raises(TuneError, match=message):
        tune(TuneOptions(tmp_path / "out", **options), progress=False)


def test_an_unrelated_output_directory_is_not_overwritten(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("keep me")
    with pytest.raises(TuneError, match="is not an earlier `mmsearch tune` output"):
        tune(TuneOptions(tmp_path / "out", corpus="debian-docs"), progress=False)
    assert (tmp_path / "out" / "precious.txt").read_text() == "keep me"


def test_models_that_are_not_bi_encoders_are_refused(tmp_path, tiny_clip_dir):
    with pytest.raises(TuneError, match="is a clip model, not a sentence-transformers bi-encoder"):
        load_bi_encoder(str(tiny_clip_dir), "cpu")
    cross = tmp_path / "cross"
    cross.mkdir()
    (cross / "config.json").write_text(json.dumps({"model_type": "bert",
                                                   "architectures": ["BertForSequenceClassification"]}))
    with pytest.raises(TuneError, match="is a classifier .*cross-encoder"):
        load_bi_encoder(str(cross), "cpu")
    with pytest.raises(TuneError, match="is not a model directory"):
        load_bi_encoder(str(tmp_path), "cpu")


def test_the_dev_split_is_seeded_and_disjoint():
    pairs = [Pair(f"q{i}", f"p{i}") for i in range(100)]
    train, dev = split_dev(pairs, 0.1, seed=3)
    assert len(dev) == 10 and len(train) == 90 and not set(train) & set(dev)
    assert split_dev(pairs, 0.1, seed=3) == (train, dev) and split_dev(pairs, 0.1, seed=4)[1] != dev


def test_a_short_run_reports_dev_metrics_per_epoch_and_exports(tmp_path, cli):
    pairs = write(tmp_path / "pairs.jsonl", pairs_for(60))
    out = tmp_path / "tuned"
    run = cli("tune", "--pairs", str(pairs), "--out", str(out), "--epochs", "2", "--batch-size", "8",
              "--max-seq-length", "32", "--hard-negatives", "3", "--device", "cpu")
    report = json.loads((out / "tune_report.json").read_text())
    assert [e["epoch"] for e in report["epochs"]] == [0, 1, 2]
    assert report["epochs"][0]["loss"] is None and all(e["loss"] > 0 for e in report["epochs"][1:])
    assert all(0 < e["mrr"] <= 1 and 0 <= e["recall@1"] <= 1 for e in report["epochs"])
    assert (report["train_pairs"], report["dev_pairs"]) == (52, 8)
    assert report["best_epoch"] == max(report["epochs"], key=lambda e: (e["mrr"], e["recall@1"], -e["epoch"]))["epoch"]
    assert "epoch 1: dev MRR" in run.stderr and f"wrote {out}" in run.stdout
    export = cli("export", "--text-model", str(out), "--repository", str(tmp_path / "repository"),
                 "--backend", "python")
    assert "parity vs PyTorch" in export.stdout and (tmp_path / "repository" / "text_embed").is_dir()
    # a second run into the same directory is allowed: it is tune's own output
    cli("tune", "--pairs", str(pairs), "--out", str(out), "--batch-size", "8", "--max-seq-length", "32")
