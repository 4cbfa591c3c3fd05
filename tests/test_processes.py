"""Process helpers shared by serve, demo, bench and the tests."""

import os
import signal
import time

import pytest

from mmsearch.processes import sigterm_as_interrupt


def test_sigterm_is_an_interrupt_inside_and_the_old_handler_is_back_after():
    # `serve` once died of a SIGTERM that came between its ready line and its wait (exit -15).
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the interrupt ends this at once; without it, no KeyboardInterrupt: the test fails
    assert signal.getsignal(signal.SIGTERM) is before
