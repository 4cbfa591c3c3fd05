"""The Streamlit search page (`page.py`, run through `app.py`) and how to start it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mmsearch.settings import ENV_PROTOCOL, ENV_URL, http_answers

APP = Path(__file__).with_name("app.py")
MAX_UPLOAD_MB = 32  # the search model refuses query images over 32 MiB anyway
PRIMARY_COLOR = "#1f6feb"  # Streamlit's default red makes a focused query box look like an error


class PageError(RuntimeError):
    pass


def require_streamlit() -> None:
    try:
        import streamlit  # noqa: F401
    except ImportError:
        raise PageError("the search page needs Streamlit: pip install 'mmsearch[ui]'") from None


def streamlit_command(port: int, address: str = "localhost") -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.port", str(port), "--server.address", address, "--server.headless", "true",
        "--server.maxUploadSize", str(MAX_UPLOAD_MB), "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal",
        "--theme.primaryColor", PRIMARY_COLOR,
    ]


def streamlit_env(url: str, protocol: str) -> dict[str, str]:
    """The page reads where Triton is from the same variables as the CLI."""
    return {**os.environ, ENV_URL: url, ENV_PROTOCOL: protocol}


def page_is_up(port: int, host: str = "127.0.0.1") -> bool:
    return http_answers(f"http://{host}:{port}/_stcore/health", b"ok")


def start_page(url: str, protocol: str, port: int, log_path: Path, address: str = "localhost", timeout: float = 60.0):
    """The page as a background process (for `mmsearch demo`), returned once it answers."""
    from mmsearch.model_repository.server import ManagedProcess, check_port_free, wait_for

    require_streamlit()
    check_port_free(port, "--ui-port")
    process = ManagedProcess("streamlit", streamlit_command(port, address), log_path, env=streamlit_env(url, protocol))
    try:
        wait_for(lambda: page_is_up(port), process, timeout, "the search page (Streamlit)")
    except Exception:
        process.stop()
        raise
    return process
