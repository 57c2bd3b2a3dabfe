"""TensorBoard's record checksum (masked CRC-32C) at numpy speed.

Without TensorFlow, TensorBoard's event writer checksums every record in pure Python
(``tensorboard.compat.tensorflow_stub.pywrap_tensorflow.crc32c``, one interpreter loop per byte): 31 ms for a
250 KB sheet, on TensorBoard's writer thread while it holds the GIL, and Lightning's ``TensorBoardLogger.save()``
(a ``flush()`` after each ``log_metrics``) waits for it on the training thread. :func:`masked_crc32c` gives the same
values (tested against TensorBoard's on random data of many lengths) in about 0.5 ms for the same record (a
231-byte scalars record: 9 instead of 24 us, a Python loop over 4-byte words), and :func:`use_fast_checksum` puts it
where TensorBoard's record writer looks it up. The ``crc32c`` packages that do this in C are not dependencies of this
library; ``benchmarks/bench_logging.py`` times both checksums.

How: the CRC register recurrence ``r <- T[(r ^ byte) & 0xFF] ^ (r >> 8)`` is linear over GF(2). The data (its first 4
bytes xor-ed with the initial register ``0xFFFFFFFF``, zeros in front, which leave a zero register at zero) is cut into
lanes of :data:`LANE` bytes, run through the recurrence side by side, four bytes a numpy step (slicing-by-4: the four
byte tables merged into two 65,536-entry tables of 16-bit halves), and the lanes' registers are folded pairwise:
``left`` advanced over ``right``'s length (a linear map, applied as four 256-entry tables) xor ``right``; an odd count
first gets a zero register in front (zero bytes in front, which change nothing), so the data is never padded to a
power of two of lanes.
"""

from __future__ import annotations

import array
import struct
from functools import cache

import numpy as np

POLY = 0x82F63B78  # CRC-32C (Castagnoli), reflected
LANE = 32  # bytes per lane: 8 numpy steps of four bytes over len / 32 lanes
SMALL = 2048  # shorter data (scalars, headers): a Python loop over 4-byte words (numpy's per-call cost would dominate)
_MASK_DELTA = 0xA282EAD8


@cache
def _byte_table() -> np.ndarray:
    """``T[b]``: the register after one byte ``b`` from a zero register."""
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(POLY), table >> 1).astype(np.uint32)
    return table


def _advance_tables(columns: np.ndarray) -> np.ndarray:
    """The four ``(256,)`` tables of the linear map whose images of the 32 unit registers are ``columns``."""
    bits = (np.arange(256)[:, None] >> np.arange(8)) & 1  # (256, 8)
    tables = np.zeros((4, 256), dtype=np.uint32)
    for k in range(4):
        for j in range(8):
            tables[k] ^= np.where(bits[:, j] == 1, columns[8 * k + j], np.uint32(0)).astype(np.uint32)
    return tables


def _apply(tables: np.ndarray, registers: np.ndarray) -> np.ndarray:
    return (
        tables[0][registers & 0xFF]
        ^ tables[1][(registers >> 8) & 0xFF]
        ^ tables[2][(registers >> 16) & 0xFF]
        ^ tables[3][registers >> 24]
    )


@cache
def _word_tables() -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)``: the register after four bytes whose xor with the register is ``w`` is
    ``low[w & 0xFFFF] ^ high[w >> 16]`` (slicing-by-4's tables ``T3, T2`` and ``T1, T0`` merged pairwise)."""
    tables = [_byte_table()]
    for _ in range(3):  # T_k: T_{k-1} followed by a zero byte
        tables.append(tables[0][tables[-1] & 0xFF] ^ (tables[-1] >> 8))
    half = np.arange(65536, dtype=np.uint32)
    low = tables[3][half & 0xFF] ^ tables[2][half >> 8]
    high = tables[1][half & 0xFF] ^ tables[0][half >> 8]
    return low, high


def _run(registers: np.ndarray, lanes: np.ndarray) -> np.ndarray:
    """The recurrence over each row of ``lanes`` ``(n, L)`` uint8 (``L`` a multiple of 4) from ``registers`` ``(n,)``,
    side by side, four bytes a step."""
    low, high = _word_tables()
    words = lanes.view("<u4")  # little-endian: the first byte is the word's low byte, as the reflected CRC reads it
    for t in range(words.shape[1]):
        mixed = registers ^ words[:, t]
        registers = low[mixed & 0xFFFF] ^ high[mixed >> 16]
    return registers


@cache
def _fold_tables(levels: int) -> tuple[np.ndarray, ...]:
    """Per fold level ``i``, the tables that advance a register over ``LANE * 2**i`` zero bytes."""
    columns = _run(np.uint32(1) << np.arange(32, dtype=np.uint32), np.zeros((32, LANE), dtype=np.uint8))
    out = []
    for _ in range(levels):
        tables = _advance_tables(columns)
        out.append(tables)
        columns = _apply(tables, columns)  # twice as far
    return tuple(out)


@cache
def _word_arrays() -> tuple[array.array[int], array.array[int], list[int]]:
    """:func:`_word_tables` as Python arrays (fast to index one item) and the byte table as a list."""
    low, high = (array.array("I") for _ in range(2))  # 4-byte items where "I" is (else from a list, slower)
    for out, table in zip((low, high), _word_tables(), strict=True):
        if out.itemsize == 4:
            out.frombytes(table.astype(np.uint32).tobytes())
        else:
            out.fromlist(table.tolist())
    return low, high, _byte_table().tolist()


def _crc32c_short(data: bytes) -> int:
    """:func:`crc32c` of short data, in Python: four bytes a step (about 3x TensorBoard's byte loop), then the tail."""
    low, high, table = _word_arrays()
    words = len(data) // 4
    register = 0xFFFFFFFF
    for word in struct.unpack_from(f"<{words}I", data):
        mixed = register ^ word
        register = low[mixed & 0xFFFF] ^ high[mixed >> 16]
    for byte in data[4 * words :]:
        register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register ^ 0xFFFFFFFF


def crc32c(data: bytes) -> int:
    """The CRC-32C of ``data``, as ``tensorboard.compat.tensorflow_stub.pywrap_tensorflow.crc32c`` computes it.

    Example::

        >>> hex(crc32c(b"123456789"))  # the standard check value
        '0xe3069283'
    """
    if len(data) < SMALL:
        return _crc32c_short(data)
    message = np.frombuffer(data, dtype=np.uint8)
    lanes = -(-len(message) // LANE)
    padded = np.zeros(lanes * LANE, dtype=np.uint8)  # zeros in front: fewer than a lane's
    padded[len(padded) - len(message) :] = message
    padded[len(padded) - len(message) : len(padded) - len(message) + 4] ^= 0xFF  # the initial register 0xFFFFFFFF
    registers = _run(np.zeros(lanes, dtype=np.uint32), padded.reshape(-1, LANE))
    for tables in _fold_tables(max(0, (lanes - 1).bit_length())):
        if len(registers) % 2:  # a zero register in front: zero bytes before the data, which leave it as it is
            registers = np.concatenate((np.zeros(1, dtype=np.uint32), registers))
        registers = _apply(tables, registers[0::2]) ^ registers[1::2]
    return int(registers[0]) ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The masked CRC-32C of a TFRecord (what TensorBoard's ``RecordWriter`` writes).

    Example::

        >>> from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as reference
        >>> data = bytes(range(256)) * 40
        >>> masked_crc32c(data) == reference(data)
        True
    """
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def use_fast_checksum() -> bool:
    """Make TensorBoard's record writer checksum with :func:`masked_crc32c` (same values), once per process; False
    when its module is not there or already uses another function than TensorBoard's pure-Python one."""
    try:
        from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
        from tensorboard.summary.writer import record_writer
    except Exception:  # noqa: BLE001 - another TensorBoard layout: keep its own checksum
        return False
    current = getattr(record_writer, "masked_crc32c", None)
    if current is masked_crc32c:
        return True
    if current is None or current is not getattr(pywrap_tensorflow, "masked_crc32c", None):
        return False  # someone else's choice, or a version that checksums elsewhere: leave it
    record_writer.masked_crc32c = masked_crc32c
    return True
