"""The one root of every error mmsearch raises on purpose.

Each stage defines its own subclasses next to the code that raises them (StoreError in the
stores, ExportError in export, SearchError in the search model...). A caller that only needs
"did mmsearch refuse this, with a reason?" catches `MmsearchError`: the CLI prints its
message as one line and exits 1, and anything else is a bug that keeps its traceback.
"""


class MmsearchError(Exception):
    """An expected failure; the message says what went wrong and, where it can, what to do."""
