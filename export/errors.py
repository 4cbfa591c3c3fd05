"""Export errors, importable without torch (the CLI reports them on any machine)."""


class ExportError(RuntimeError):
    """An export could not be produced or failed its parity check."""
