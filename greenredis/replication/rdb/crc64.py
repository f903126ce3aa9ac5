"""CRC-64 as Redis computes it (Jones polynomial, reflected, init 0, no final xor).

The catalogue calls it CRC-64/REDIS (check value 0xe9c6d914c4b8d9ca). The ``anycrc``
package computes it in C at several GB/s; without it a pure-Python table loop is used,
which is correct but some 100x slower (an RDB of 30 MB would take seconds).
"""

__all__ = ["crc64", "HAVE_FAST_CRC"]

_POLY_REFLECTED = 0x95AC9329AC4BC9B5  # 0xad93d23594c935a9 bit-reversed

try:
    import anycrc as _anycrc

    _model = _anycrc.Model("CRC64-REDIS")
    HAVE_FAST_CRC = True
except (ImportError, KeyError, ValueError):  # pragma: no cover - environment
    _model = None
    HAVE_FAST_CRC = False


def _make_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _POLY_REFLECTED if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = None


def _py_crc64(data, crc=0):
    global _TABLE
    if _TABLE is None:
        _TABLE = _make_table()
    table = _TABLE
    for b in bytes(data):
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc


def crc64(data, crc=0):
    """CRC-64/REDIS of ``data``, continuing from ``crc`` (the CRC of what came before)."""
    if _model is not None:
        return _model.calc(data, crc)
    return _py_crc64(data, crc)
