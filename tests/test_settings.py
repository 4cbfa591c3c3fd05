"""Where the stores live: the embedded Milvus Lite database is never opened twice."""

import json
import os

import pytest

from mmsearch import settings as settings_module
from mmsearch.processes import free_port
from mmsearch.settings import DataDirError, LiteServerDown, StoreSettings
from mmsearch.stores import StoreUnavailable, VectorStore


def record_lite_server(settings: StoreSettings, owner: int) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()  # nothing listens there: the server is down
    settings.lite_endpoint_file.write_text(json.dumps({
        "uri": f"http://127.0.0.1:{port}", "host": "127.0.0.1", "port": port,
        "path": str(settings.data_dir / "milvus.db"), "pid": 1, "owner": owner}))


def test_a_database_whose_serve_is_alive_is_never_opened_in_process(tmp_path, monkeypatch):
    # `index` once opened milvus.db itself while serve's Lite server was down: two writers.
    monkeypatch.setattr(settings_module, "LITE_RESTART_WAIT_S", 0.5)
    settings = StoreSettings.resolve(tmp_path)
    record_lite_server(settings, owner=os.getpid())
    with pytest.raises(LiteServerDown, match=rf"belongs to `mmsearch serve` \(pid {os.getpid()}\).* within 0 s"):
        settings.connect_uri()
    with pytest.raises(StoreUnavailable, match="belongs to `mmsearch serve`"):
        VectorStore.open(settings)


def test_a_record_left_by_a_serve_that_is_gone_does_not_block(tmp_path):
    settings = StoreSettings.resolve(tmp_path)
    record_lite_server(settings, owner=2**22 + 12345)  # above pid_max: no such process
    assert settings.connect_uri() == settings.milvus_uri


def test_a_data_dir_that_cannot_be_written_is_one_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(DataDirError, match=r"data dir .*a-file/data is not writable \(Not a directory\): pass"):
        StoreSettings.resolve(blocker / "data").require_writable()
