"""The Streamlit search page (`page.py`, run through `app.py`) and how to start it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mmsearch.errors import MmsearchError
from mmsearch.model_repository.contract import MAX_IMAGE_BYTES
from mmsearch.processes import check_port_free, http_answers, start_ready
from mmsearch.settings import ENV_PROTOCOL, ENV_URL

APP = Path(__file__).with_name("app.py")
MAX_UPLOAD_MB = MAX_IMAGE_BYTES // 2**20  # the search model refuses bigger query images anyway
PRIMARY_COLOR = "#1f6feb"  # Streamlit's default red makes a focused query box look like an error
PAGE_START_S = 60.0


class PageError(MmsearchError):
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


def start_page(url: str, protocol: str, port: int, log_path: Path, address: str = "localhost"):
    """The page as a background process (for `mmsearch demo`), returned once it answers."""
    require_streamlit()
    check_port_free(port, "--ui-port")
    return start_ready("the search page (Streamlit)", streamlit_command(port, address), log_path,
                       lambda: page_is_up(port), PAGE_START_S, env=streamlit_env(url, protocol))


def open_page(url: str, protocol: str, port: int, address: str = "localhost") -> None:
    """`mmsearch ui`: this process becomes Streamlit serving the page (Ctrl-C stops it)."""
    require_streamlit()
    check_port_free(port, "--port")
    print(f"mmsearch ui: http://{address}:{port} (Triton at {url} over {protocol}); Ctrl-C stops it", flush=True)
    command = streamlit_command(port, address)
    os.execve(command[0], command, streamlit_env(url, protocol))
