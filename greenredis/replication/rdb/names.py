"""The numbers of the RDB format, named as Redis's ``rdb.h`` (and Valkey's) name them.

``RDBType``: the type byte before a key (``RDB_TYPE_*``); ``Opcode``: the special record
bytes (``RDB_OPCODE_*``); ``ModuleOpcode``: the annotations of a module value
(``RDB_MODULE_OPCODE_*``); ``Enc``: integer/LZF string encodings (``RDB_ENC_*``);
``QuicklistContainer``: a quicklist 2 node's kind (``QUICKLIST_NODE_CONTAINER_*``).
"""

from enum import IntEnum

__all__ = ["RDBType", "Opcode", "ModuleOpcode", "Enc", "QuicklistContainer"]


class RDBType(IntEnum):
    STRING = 0
    LIST = 1
    SET = 2
    ZSET = 3
    HASH = 4
    ZSET_2 = 5  # binary scores
    MODULE_PRE_GA = 6  # Redis 4.0 release candidates
    MODULE_2 = 7
    HASH_ZIPMAP = 9
    LIST_ZIPLIST = 10
    SET_INTSET = 11
    ZSET_ZIPLIST = 12
    HASH_ZIPLIST = 13
    LIST_QUICKLIST = 14
    STREAM_LISTPACKS = 15
    HASH_LISTPACK = 16
    ZSET_LISTPACK = 17
    LIST_QUICKLIST_2 = 18
    STREAM_LISTPACKS_2 = 19
    SET_LISTPACK = 20
    STREAM_LISTPACKS_3 = 21
    # Redis 7.4+ hash field expiry; in VALKEY files, 22 is Valkey 9's own hash type
    HASH_METADATA_PRE_GA = 22
    HASH_LISTPACK_EX_PRE_GA = 23
    HASH_METADATA = 24
    HASH_LISTPACK_EX = 25
    VALKEY_HASH_2 = 22


class Opcode(IntEnum):
    SLOT_IMPORT = 243  # Valkey: a slot import job's state
    SLOT_INFO = 244
    FUNCTION2 = 245
    FUNCTION_PRE_GA = 246  # Redis 7.0 release candidates
    MODULE_AUX = 247
    IDLE = 248  # LRU idle time
    FREQ = 249  # LFU counter
    AUX = 250
    RESIZEDB = 251
    EXPIRETIME_MS = 252
    EXPIRETIME = 253  # seconds, before RDB 3
    SELECTDB = 254
    EOF = 255


FIRST_OPCODE = min(Opcode)  # type bytes are below it


class ModuleOpcode(IntEnum):
    EOF = 0
    SINT = 1
    UINT = 2
    FLOAT = 3
    DOUBLE = 4
    STRING = 5


class Enc(IntEnum):
    INT8 = 0
    INT16 = 1
    INT32 = 2
    LZF = 3


class QuicklistContainer(IntEnum):
    PLAIN = 1
    PACKED = 2
