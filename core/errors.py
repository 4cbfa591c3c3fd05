"""The one root of every error mmsearch raises on purpose.

Each stage defines its own subclasses next to the code that raises them (StoreError in the
stores, ExportError in export, SearchError in the search model...). A caller that only needs
"did mmsearch refuse this, with a reason?" catches `MmsearchError`: the CLI prints its
message as one line and exits 1, and anything else is a bug that keeps its traceback.
"""


class MmsearchError(Exception):
    """An expected failure; the message says what went wrong and, where it can, what to do."""

    def detached(self):
        """This error without its traceback and chained errors, for keeping as a request's answer.
        A kept traceback holds every frame of the call, and the frames hold the request (in
        Triton, its input tensors) and the list the error is kept in: a cycle that only the
        garbage collector frees, so each bad 100 MB request held on to its 100 MB."""
        self.__traceback__ = self.__context__ = self.__cause__ = None
        return self
