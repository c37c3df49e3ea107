"""An emulated board behind a pseudo-terminal, for host-side tests of the UART link."""

from __future__ import annotations

import contextlib
import os
import select
import threading


@contextlib.contextmanager
def board_on_pty(board, poll: float = 0.005):
    """Serve ``board`` (an object with ``write(bytes)`` and an ``out`` bytearray of its replies) on a
    new pseudo-terminal from a thread; yields the terminal's path for a serial client."""
    controller, device = os.openpty()
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            if select.select([controller], [], [], poll)[0]:
                board.write(os.read(controller, 4096))
            if board.out:
                os.write(controller, bytes(board.out))
                board.out.clear()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield os.ttyname(device)
    finally:
        stop.set()
        thread.join()
        os.close(controller)
        os.close(device)
