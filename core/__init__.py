"""mmsearch: multimodal semantic search served by NVIDIA Triton Inference Server."""
__version__ = "0.1.0"
