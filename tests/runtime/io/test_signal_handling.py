"""`handling`: a handler for a block, the previous one back after, and nothing off the main thread."""
import signal
import threading

from runtime.io.signals import handling


def test_a_handler_for_the_block_then_the_previous_one():
    before = signal.getsignal(signal.SIGUSR1)
    with handling(signal.SIGUSR1, signal.SIG_IGN):
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
    assert signal.getsignal(signal.SIGUSR1) == before


def test_off_the_main_thread_nothing_is_set():
    seen = []

    def block():
        with handling(signal.SIGUSR1, signal.SIG_IGN):  # signal.signal would raise ValueError here
            seen.append(signal.getsignal(signal.SIGUSR1))

    before = signal.getsignal(signal.SIGUSR1)
    thread = threading.Thread(target=block)
    thread.start()
    thread.join()
    assert seen == [before]
