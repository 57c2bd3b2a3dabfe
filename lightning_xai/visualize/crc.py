"""TensorBoard's record checksum (masked CRC-32C) at numpy speed.

Without TensorFlow, TensorBoard's event writer checksums every record in pure Python
(``tensorboard.compat.tensorflow_stub.pywrap_tensorflow.crc32c``, one interpreter loop per byte): 31 ms for a
250 KB sheet, on TensorBoard's writer thread while it holds the GIL, and Lightning's ``TensorBoardLogger.save()``
(a ``flush()`` after each ``log_metrics``) waits for it on the training thread. :func:`masked_crc32c` gives the same
values (tested against TensorBoard's on random data of many lengths) in about 1 ms for the same record, and
:func:`use_fast_checksum` puts it where TensorBoard's record writer looks it up. The ``crc32c`` packages that do this in
C are not dependencies of this library; ``benchmarks/bench_logging.py`` times both checksums.

How: the CRC register recurrence ``r <- T[(r ^ byte) & 0xFF] ^ (r >> 8)`` is linear over GF(2). The data (its first 4
bytes xor-ed with the initial register ``0xFFFFFFFF``, zeros in front, which leave a zero register at zero) is cut into
``2**k`` lanes of :data:`LANE` bytes, run through the recurrence side by side (one numpy step per byte of a lane), and
the lanes' registers are folded pairwise: ``left`` advanced over ``right``'s length (a linear map, applied as four
256-entry tables) xor ``right``.
"""

from __future__ import annotations

from functools import cache

import numpy as np

POLY = 0x82F63B78  # CRC-32C (Castagnoli), reflected
LANE = 32  # bytes per lane: 32 numpy steps over len / 32 lanes
SMALL = 2048  # shorter data (scalars, headers) go to TensorBoard's own function: numpy's per-call cost would dominate
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


def _run(registers: np.ndarray, lanes: np.ndarray) -> np.ndarray:
    """The recurrence over each row of ``lanes`` ``(n, L)`` from ``registers`` ``(n,)``, side by side."""
    table = _byte_table()
    for t in range(lanes.shape[1]):
        registers = table[(registers ^ lanes[:, t]) & 0xFF] ^ (registers >> 8)
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


def crc32c(data: bytes) -> int:
    """The CRC-32C of ``data``, as ``tensorboard.compat.tensorflow_stub.pywrap_tensorflow.crc32c`` computes it.

    Example::

        >>> hex(crc32c(b"123456789"))  # the standard check value
        '0xe3069283'
    """
    if len(data) < 4:
        from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c as reference

        return int(reference(data))
    message = np.frombuffer(data, dtype=np.uint8)
    lanes = -(-len(message) // LANE)
    levels = max(0, (lanes - 1).bit_length())
    padded = np.zeros((2**levels) * LANE, dtype=np.uint8)
    padded[len(padded) - len(message) :] = message
    padded[len(padded) - len(message) : len(padded) - len(message) + 4] ^= 0xFF  # the initial register 0xFFFFFFFF
    registers = _run(np.zeros(2**levels, dtype=np.uint32), padded.reshape(-1, LANE))
    for tables in _fold_tables(levels):
        registers = _apply(tables, registers[0::2]) ^ registers[1::2]
    return int(registers[0]) ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The masked CRC-32C of a TFRecord (what TensorBoard's ``RecordWriter`` writes), numpy for data of
    :data:`SMALL` bytes and more.

    Example::

        >>> from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as reference
        >>> data = bytes(range(256)) * 40
        >>> masked_crc32c(data) == reference(data)
        True
    """
    if len(data) < SMALL:
        from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as reference

        return int(reference(data))
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
