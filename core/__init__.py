"""mmsearch: multimodal semantic search served by NVIDIA Triton Inference Server."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mmsearch")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
