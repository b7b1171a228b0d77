"""The local management socket, like ptp4l's ``uds_address``: a UNIX datagram socket.

linuxptp's ``pmc -u -s PATH`` binds its own socket and sends management messages to PATH; the
answer goes back to the sender's address. It behaves as a transport without timestamps (ptp4l
treats it as port 0).
"""

from __future__ import annotations

import os
import socket
import stat

from controlplane.runtime.transport import Received, TransportError, TransportEvent


class UdsTransport:
    network_protocol = "UDS"

    def __init__(self, path: str) -> None:
        self.ifname = path
        self.path = path
        self._sock: socket.socket | None = None

    def open(self) -> None:
        if self._sock is not None:
            return
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise TransportError(self.path, "uds_address exists and is not a socket; refusing to replace it")
            # a stale socket of a dead process can go; a live one must not be stolen
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                probe.connect(self.path)
            except OSError:
                os.unlink(self.path)
            else:
                raise TransportError(self.path, "uds_address is in use by another process (give each daemon its own)")
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(self.path)
            os.chmod(self.path, 0o660)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise TransportError(self.path, "cannot bind the management socket", exc) from exc
        self._sock = sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            try:
                os.unlink(self.path)
            except OSError:
                pass

    def fds(self) -> tuple[int, ...]:
        return (self._sock.fileno(),) if self._sock is not None else ()

    def protocol_address(self) -> bytes:
        return self.path.encode()[:16]

    def send(self, data: bytes, *, event: bool, peer_delay: bool = False, dest: object | None = None,
             tx_stamp: bool = True) -> int | None:
        if self._sock is None or not isinstance(dest, (str, bytes)) or not dest:
            return None  # nothing to answer to (an anonymous or unbound client)
        try:
            self._sock.sendto(data, dest)
        except OSError as exc:
            raise TransportError(self.path, f"send to {dest!r} failed", exc) from exc
        return None

    def poll(self, fd: int) -> list[TransportEvent]:
        out: list[TransportEvent] = []
        if self._sock is None:
            return out
        for _ in range(64):
            try:
                data, addr = self._sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                break
            out.append(Received(data=data, rx_ts_ns=None, source=addr, event=False))
        return out
