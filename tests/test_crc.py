"""The numpy CRC-32C equals TensorBoard's pure-Python one, and event files written with it read back (TensorBoard's
reader checks every record's checksum with its own function)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
from tensorboard.summary.writer import record_writer

from lightning_xai.visualize import crc


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=9000))
def test_crc32c_equals_tensorboards(data: bytes) -> None:
    assert crc.crc32c(data) == pywrap_tensorflow.crc32c(data)
    assert crc.masked_crc32c(data) == pywrap_tensorflow.masked_crc32c(data)


@pytest.mark.parametrize("size", [4, 5, 31, 32, 33, 96, 2047, 2048, 2049, 65_536, 100_000, 250_001])
def test_crc32c_at_lane_and_size_edges(size: int) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    assert crc.crc32c(data) == pywrap_tensorflow.crc32c(data)
    assert crc.masked_crc32c(data) == pywrap_tensorflow.masked_crc32c(data)


def test_a_wrong_register_is_caught() -> None:
    data = bytes(range(256)) * 20
    assert crc.crc32c(data) != crc.crc32c(data[:-1] + bytes([data[-1] ^ 1]))


def test_event_files_written_with_it_read_back(tmp_path, monkeypatch) -> None:
    from torch.utils.tensorboard import SummaryWriter

    monkeypatch.setattr(record_writer, "masked_crc32c", pywrap_tensorflow.masked_crc32c)
    assert crc.use_fast_checksum() and record_writer.masked_crc32c is crc.masked_crc32c
    assert crc.use_fast_checksum()  # idempotent
    image = np.random.default_rng(0).integers(0, 256, (3, 200, 200), dtype=np.uint8)  # a record far over SMALL
    with SummaryWriter(str(tmp_path)) as writer:
        writer.add_image("big", image, 0)
        writer.add_scalar("small", 1.5, 0)
    acc = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    acc.Reload()  # raises DataLossError on a bad checksum
    assert acc.Images("big")[0].encoded_image_string and acc.Scalars("small")[0].value == 1.5


def test_another_function_is_left_in_place(monkeypatch) -> None:
    def theirs(data: bytes) -> int:
        return pywrap_tensorflow.masked_crc32c(data)

    monkeypatch.setattr(record_writer, "masked_crc32c", theirs)
    assert not crc.use_fast_checksum() and record_writer.masked_crc32c is theirs
