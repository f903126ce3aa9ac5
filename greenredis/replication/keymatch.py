"""Redis's glob (``KEYS``/``SCAN MATCH``), with ``stringmatchlen``'s exact semantics.

Redis's matcher (util.c) walks the pattern with C pointers, and its edge cases are part of
what KEYS returns: ``[^]`` matches any one byte, ``[]`` nothing, an unterminated ``[abc``
acts as ``[abc]``, ``[a-]`` is a range from ``]`` to ``a`` that swallows the ``]``, a
reversed range ``[z-a]`` is swapped, range bounds compare as *signed* chars (so ``\\xff``
sorts before ``a``), a trailing ``\\`` is a literal backslash, the empty key matches only
the empty pattern, and (Redis 7.2+ / Valkey) a pattern with more than 1000 nested ``*``
matches nothing.

``matcher(pattern)`` compiles that once into a regex (each ``[...]`` an explicit byte set,
every ``*`` but the last an atomic group, so matching stays linear like Redis's own
skip-longer-matches rule); ``match_keys(pattern, keys)`` filters.
"""

import re
from collections.abc import Callable, Iterable

__all__ = ["matcher", "match_keys"]

_STAR = object()
_NESTING = 1000  # stringmatchlen gives up past this many nested '*'
_CACHE: dict[bytes, Callable[[bytes], bool]] = {}


def _signed(c: int) -> int:
    return c - 256 if c >= 128 else c


def _tokens(p: bytes) -> list:
    """The pattern as Redis reads it: ``_STAR`` or a frozenset of the bytes one char may be."""
    n = len(p)
    at = lambda j: p[j] if j < n else 0  # C reads the NUL terminator past the end
    out: list = []
    i = 0
    while i < n:
        c = p[i]
        if c == 0x2A:  # '*'
            if not out or out[-1] is not _STAR:
                out.append(_STAR)
        elif c == 0x3F:  # '?'
            out.append(_ANY)
        elif c == 0x5B:  # '['
            i += 1
            negate = at(i) == 0x5E  # '^'
            if negate:
                i += 1
            members: set[int] = set()
            while True:
                if at(i) == 0x5C and n - i >= 2:  # '\\' escapes the next byte
                    i += 1
                    members.add(p[i])
                elif at(i) == 0x5D:  # ']'
                    break
                elif i >= n:  # unterminated: back up, the class ends with the pattern
                    i -= 1
                    break
                elif n - i >= 3 and p[i + 1] == 0x2D:  # 'x-y' (even when y is ']')
                    lo, hi = sorted((_signed(p[i]), _signed(p[i + 2])))
                    members.update(b for b in range(256) if lo <= _signed(b) <= hi)
                    i += 2
                else:
                    members.add(p[i])
                i += 1
            out.append(frozenset(_ANY - members) if negate else frozenset(members))
        else:
            if c == 0x5C and n - i >= 2:  # '\\x' is x; a trailing '\\' is itself
                i += 1
            out.append(frozenset((p[i],)))
        i += 1
    return out


_ANY = frozenset(range(256))


def _byte_class(members: frozenset) -> bytes:
    if not members:
        return b"(?!)"
    if members == _ANY:
        return b"."
    if len(members) == 1:
        return re.escape(bytes(members))
    return b"[" + b"".join(b"\\x%02x" % m for m in sorted(members)) + b"]"


def _compile(pattern: bytes) -> Callable[[bytes], bool]:
    tokens = _tokens(pattern)
    segments: list[list[bytes]] = [[]]
    for t in tokens:
        if t is _STAR:
            segments.append([])
        else:
            segments[-1].append(_byte_class(t))
    stars = len(segments) - 1
    if not tokens:
        return lambda key: key == b""
    if stars - (tokens[-1] is _STAR) > _NESTING:
        return lambda key: False
    parts = [b"".join(segments[0])]
    # Each segment has a fixed length, so its leftmost place after the previous one is
    # the only one worth trying: commit to it (what stringmatchlen's skipLongerMatches does).
    parts += [b"(?>.*?" + b"".join(seg) + b")" for seg in segments[1:-1]]
    if stars:
        parts.append(b".*" + b"".join(segments[-1]))
    rx = re.compile(b"".join(parts) + rb"\Z", re.DOTALL)
    match = rx.match
    return lambda key: key != b"" and match(key) is not None


def matcher(pattern: bytes) -> Callable[[bytes], bool]:
    """A predicate: does a key match ``pattern`` as Redis's ``stringmatchlen`` decides?"""
    m = _CACHE.get(pattern)
    if m is None:
        if len(_CACHE) > 256:
            _CACHE.clear()
        m = _CACHE[pattern] = _compile(pattern)
    return m


def match_keys(pattern: bytes, keys: Iterable[bytes]) -> list[bytes]:
    """The keys matching ``pattern``, like ``KEYS pattern`` (``*`` alone is every key)."""
    if pattern == b"*":
        return list(keys)
    return list(filter(matcher(pattern), keys))
