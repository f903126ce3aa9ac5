"""A small wrapper over gevent-websocket's ``WebSocket`` for Tempo's needs.

gevent-websocket reads a message of any size into memory, answers pings and
close frames from the reading greenlet, and leaves the status code out of the
close frames it sends, and accepts unmasked client frames. ``CappedWebSocket``
fixes all four: a message
over ``max_size`` is read and discarded in chunks and raises ``MessageTooLarge``
(the connection stays usable), pongs and the close reply are handed to
``on_control`` so that the socket's one writer greenlet sends them, and an
unmasked frame (RFC 6455 section 5.1) closes the connection with 1002.
"""

from geventwebsocket.exceptions import FrameTooLargeException, ProtocolError, WebSocketError
from geventwebsocket.websocket import Header, WebSocket

__all__ = ["CappedWebSocket", "MessageTooLarge"]


class MessageTooLarge(Exception):
    """An incoming message was larger than the cap; it was discarded."""

    def __init__(self, size, cap):
        super().__init__(f"message of {size} bytes is larger than {cap}")
        self.size = size
        self.cap = cap


def unmask(data, mask):
    """XOR ``data`` with the 4-byte ``mask`` (one big-int op, not a loop per byte)."""
    n = len(data)
    if not n:
        return b""
    key = (bytes(mask) * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


class CappedWebSocket(WebSocket):
    """A ``WebSocket`` that caps incoming message size and never writes while reading."""

    __slots__ = ("max_size", "on_control", "close_code")

    CHUNK = 65536

    def __init__(self, environ, stream, handler, max_size=4096, on_control=None):
        super().__init__(environ, stream, handler)
        self.max_size = max_size
        self.on_control = on_control  # on_control(opcode, payload): send this frame for me
        self.close_code = None  # set when the peer sent a close frame

    @classmethod
    def wrap(cls, ws, max_size=4096):
        """Take over the stream of a plain gevent-websocket ``WebSocket``."""
        if isinstance(ws, cls):
            ws.max_size = max_size
            return ws
        capped = cls(ws.environ, ws.stream, ws.handler, max_size)
        ws.closed = True  # the handler must not write a second close frame through it
        return capped

    def _read(self, n):
        data = self.raw_read(n) if n else b""
        if len(data) != n:
            raise WebSocketError("unexpected EOF reading a frame")
        return data

    def _payload(self, header):
        data = self._read(header.length)
        return unmask(data, header.mask)

    def _discard(self, n):
        while n:
            n -= len(self._read(min(n, self.CHUNK)))

    def read_message(self):
        """The next text (str) or binary (bytes) message, or None on close.

        A text message that is not valid UTF-8 is returned as bytes, for the caller
        to reject like any other bad message.
        """
        opcode = None
        message = bytearray()
        size = 0
        while True:
            header = Header.decode_header(self.stream)
            if header.flags:
                raise ProtocolError("reserved bits set")
            if not header.mask:  # RFC 6455 5.1: a server MUST close on an unmasked client frame
                raise ProtocolError("unmasked client frame")
            op = header.opcode
            if op in (self.OPCODE_TEXT, self.OPCODE_BINARY):
                if opcode:
                    raise ProtocolError("new message inside a fragmented one")
                opcode = op
            elif op == self.OPCODE_CONTINUATION:
                if not opcode:
                    raise ProtocolError("continuation frame without a message")
            elif op == self.OPCODE_PING:
                self._control(self.OPCODE_PONG, self._payload(header))
                continue
            elif op == self.OPCODE_PONG:
                self._payload(header)
                continue
            elif op == self.OPCODE_CLOSE:
                payload = self._payload(header)
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1000
                self.close_code = code if self._is_valid_close_code(code) else 1002
                return None
            else:
                raise ProtocolError(f"unknown opcode {op}")
            size += header.length
            if size > self.max_size:
                self._discard(header.length)
                message = bytearray()
            else:
                message += self._payload(header)
            if header.fin:
                break
        if size > self.max_size:
            raise MessageTooLarge(size, self.max_size)
        if opcode == self.OPCODE_TEXT:
            try:
                return message.decode("utf-8")
            except UnicodeDecodeError:
                return bytes(message)
        return bytes(message)

    def _control(self, opcode, payload):
        if self.on_control is not None:
            self.on_control(opcode, payload)
        else:
            self.send_frame(payload, opcode)

    def close(self, code=1000, message=b""):
        """Send a close frame carrying ``code`` (gevent-websocket's ``close`` drops
        the code and sends only the message) and mark the socket closed."""
        if self.closed:
            return
        reason = message.encode() if isinstance(message, str) else bytes(message or b"")
        try:
            self.send_frame(code.to_bytes(2, "big") + reason[:123], self.OPCODE_CLOSE)
        except (OSError, WebSocketError, AttributeError, TypeError):
            pass  # the peer is gone; closing anyway
        finally:
            self.closed = True
            self.stream = self.raw_write = self.raw_read = None
            self.environ = None

    def receive(self):
        """Like ``WebSocket.receive`` but lets ``MessageTooLarge`` through and never
        writes: on a protocol error it records close code 1002 and returns None."""
        if self.closed:
            raise WebSocketError("connection is already closed")
        try:
            return self.read_message()
        except (ProtocolError, FrameTooLargeException):
            self.close_code = 1002
        except (OSError, WebSocketError, AttributeError):
            # AttributeError: the stream went away under us (closed by the writer)
            pass
        return None
