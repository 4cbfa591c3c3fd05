"""What both exporters share: their errors, how a model source is resolved and how a
failed load is explained, and the export.json record. Importable without torch."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

EXPORT_JSON = "export.json"


class ExportError(RuntimeError):
    """An export could not be produced or failed its parity check."""


def resolve_source(name_or_path: str, what: str) -> str:
    """A local directory as an absolute path, or a hub name as given."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists() or path.is_absolute() or str(name_or_path).startswith((".", "~")):
        # Clearly meant as a path: don't let it fall through to a confusing hub lookup.
        raise ExportError(f"{what} path {name_or_path!r} is not a directory")
    return str(name_or_path)


def hub_unreachable(exc: BaseException) -> bool:
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    # transformers re-raises hub failures as a bare OSError; the cause chain keeps the real type.
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
            return True
        seen = seen.__cause__ or seen.__context__
    return "couldn't connect to" in str(exc).lower()


def load_failure(exc: Exception, name_or_path: str, what: str, unreachable_message: str) -> ExportError:
    """One line that says why `name_or_path` did not load: the hub, or the model's own error."""
    if hub_unreachable(exc):
        return ExportError(unreachable_message)
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return ExportError(f"could not load {what} {name_or_path!r}: {first_line}")


class ExportRecord:
    """Mixin for the export dataclasses: `save` writes export.json with paths relative to the folder."""

    def save(self, output_dir: Path) -> Path:
        output_dir = Path(output_dir)
        record = {
            key: Path(value).relative_to(output_dir).as_posix() if isinstance(value, Path) else value
            for key, value in asdict(self).items()
        }
        path = output_dir / EXPORT_JSON
        path.write_text(json.dumps(record, indent=2) + "\n")
        return path
