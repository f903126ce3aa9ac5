"""The RDB snapshot: an incremental parser (``parser``), the compact encodings it
decodes (``encodings``), LZF and CRC-64 (C libraries with pure-Python fallbacks)."""

from greenredis.replication.rdb.parser import (
    CorruptValueError,
    RDBError,
    RDBParser,
    decode_dump,
    decode_function_dump,
    load_file,
)

__all__ = ["RDBParser", "RDBError", "CorruptValueError", "decode_dump", "decode_function_dump", "load_file"]
