"""LZF decompression, as Redis uses it for compressed RDB strings.

Uses the C extension of the ``python-lzf`` package when it is installed (fast);
otherwise a pure-Python decoder of the (tiny, stable) LZF format, which is slow
but correct: LZF strings are rare on the hot path of an RDB load except for
compressible listpacks, where the C extension matters.
"""

__all__ = ["decompress", "LZFError", "HAVE_C_LZF"]


class LZFError(ValueError):
    """The compressed data is corrupt or does not expand to the stated length."""


def _py_decompress(data, out_len):
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        ctrl = data[i]
        i += 1
        if ctrl < 32:  # literal run of ctrl + 1 bytes
            end = i + ctrl + 1
            if end > n:
                raise LZFError("LZF literal run past the end of the input")
            out += data[i:end]
            i = end
        else:  # back reference
            length = ctrl >> 5
            if length == 7:
                length += data[i]
                i += 1
            ref = len(out) - ((ctrl & 0x1F) << 8) - data[i] - 1
            i += 1
            length += 2
            if ref < 0:
                raise LZFError("LZF back reference before the start of the output")
            if ref + length <= len(out):
                out += out[ref : ref + length]
            else:  # overlapping copy: byte by byte
                for k in range(ref, ref + length):
                    out.append(out[k])
        if len(out) > out_len:
            raise LZFError("LZF data expands past the stated length")
    if len(out) != out_len:
        raise LZFError(f"LZF data expands to {len(out)} bytes, expected {out_len}")
    return bytes(out)


try:
    import lzf as _lzf

    HAVE_C_LZF = True
except ImportError:  # pragma: no cover - depends on the environment
    _lzf = None
    HAVE_C_LZF = False

# python-lzf's own decompress(data, max_len) (None without it), for a hot loop that checks
# its result itself: it returns None or a shorter string, or raises ValueError, on bad data
c_decompress = _lzf.decompress if _lzf is not None else None


def decompress(data, out_len):
    """Expand LZF ``data`` to exactly ``out_len`` bytes or raise LZFError."""
    if out_len == 0:
        if data:
            raise LZFError("LZF data for an empty string")
        return b""
    if _lzf is not None:
        try:
            out = _lzf.decompress(bytes(data), out_len)
        except (ValueError, SystemError) as exc:
            raise LZFError(f"corrupt LZF data: {exc}") from None
        if out is None or len(out) != out_len:
            raise LZFError(f"corrupt LZF data (does not expand to {out_len} bytes)")
        return out
    try:
        return _py_decompress(data, out_len)
    except IndexError:
        raise LZFError("LZF data truncated") from None
