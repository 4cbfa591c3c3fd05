"""Small helpers shared by the python models' `model.py` files (no Triton import here)."""

from __future__ import annotations

import json
from pathlib import Path


class ModelArgs:
    """The `args` dict Triton passes to `initialize`, read the way our models need it."""

    def __init__(self, args: dict):
        self.config = json.loads(args["model_config"])
        self.name = args["model_name"]
        self.version_dir = Path(args["model_repository"]) / args["model_version"]
        self.instance_kind = args.get("model_instance_kind", "CPU")
        self.device_id = int(args.get("model_instance_device_id") or 0)

    def parameter(self, key: str, default: str | None = None) -> str | None:
        entry = self.config.get("parameters", {}).get(key)
        return entry["string_value"] if entry else default


def decode_text(value) -> str:
    """A BYTES tensor element as text; invalid UTF-8 is replaced rather than failing the batch."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)
