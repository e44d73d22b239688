"""Erasure-code geometry: the book's names, with a block size sized for Python.

The book encodes 32000-byte blocks; we use 1 MiB blocks so the per-block overhead of Python
and of the codec call is amortised, while memory stays bounded (a few blocks per request).
"""
DATA_SHARDS = 4
PARITY_SHARDS = 2
ALL_SHARDS = DATA_SHARDS + PARITY_SHARDS
#: Bytes of object encoded at once (a *block*).
BLOCK_SIZE = 1024 * 1024
#: Bytes of each shard's payload per full block (a *shard block*).
BLOCK_PER_SHARD = BLOCK_SIZE // DATA_SHARDS
