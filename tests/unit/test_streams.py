"""rechunk / iter_chunks / read_exact keep bytes and bound memory."""
import io

from lib.hashing import HashingIter, sha256_b64
from lib.streams import iter_chunks, read_exact, rechunk


def test_rechunk_cuts_exact_blocks_and_a_short_tail():
    data = bytes(range(256)) * 41
    for pieces in ([data], [data[:1], data[1:]], [data[i:i + 7] for i in range(0, len(data), 7)]):
        blocks = list(rechunk(pieces, 100))
        assert b"".join(blocks) == data
        assert all(len(b) == 100 for b in blocks[:-1])
        assert 0 < len(blocks[-1]) <= 100


def test_rechunk_of_nothing_is_nothing():
    assert list(rechunk([], 10)) == []
    assert list(rechunk([b"", b""], 10)) == []


def test_iter_chunks_honours_limit():
    stream = io.BytesIO(b"x" * 1000)
    assert b"".join(iter_chunks(stream, 300, chunk_size=64)) == b"x" * 300


def test_read_exact_reads_across_short_reads():
    class Trickle(io.RawIOBase):
        def __init__(self, data):
            self.data = data

        def read(self, n=-1):
            k = min(3, n)
            out, self.data = self.data[:k], self.data[k:]
            return out

    assert read_exact(Trickle(b"abcdefghij"), 8) == b"abcdefgh"
    assert read_exact(Trickle(b"abc"), 8) == b"abc"


def test_hashing_iter_counts_and_hashes():
    it = HashingIter([b"ab", b"c"])
    assert b"".join(it) == b"abc"
    assert it.size == 3 and it.b64() == sha256_b64(b"abc")
