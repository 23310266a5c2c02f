"""Read back what an offline W&B run logged, straight from its ``run-*.wandb`` file.

The file is a LevelDB-style log: a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then 32 KiB blocks of
records, each with a 7-byte header (crc32, length, type) and a protobuf ``Record`` payload that may be split
into FIRST/MIDDLE/LAST fragments across blocks.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _records(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(kind, chunk) of each complete, CRC-checked record of the LevelDB-style log (blocks of BLOCK bytes)."""
    ident, magic, version = struct.unpack("<4sHB", data[:HEADER])
    if (ident, magic, version) != (b":W&B", 0xBEE1, 0):
        raise ValueError("not a W&B transaction log")
    pos = HEADER
    while pos + HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < HEADER:
            pos += room
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0 and length == 0:
            pos += room
            continue
        if pos + HEADER + length > len(data):
            break  # the writer is still appending this record
        chunk = data[pos + HEADER : pos + HEADER + length]
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            raise ValueError(f"corrupt record at byte {pos}")
        pos += HEADER + length
        yield kind, chunk


def _payloads(data: bytes) -> Iterator[bytes]:
    """The payloads of the log, a record split over blocks (FIRST, MIDDLE..., LAST) joined again."""
    pending = b""
    for kind, chunk in _records(data):
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""


def read_offline_run(run_dir: Path) -> dict[str, Any]:
    """``{"history": [row, ...], "summary": {...}, "config": {...}}`` of an ``offline-run-*`` directory."""
    (log_file,) = sorted(run_dir.glob("run-*.wandb"))
    out: dict[str, Any] = {"history": [], "summary": {}, "config": {}}

    def key(item: Any) -> str:
        return item.key or "/".join(item.nested_key)

    for payload in _payloads(log_file.read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            out["history"].append({key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            out["summary"].update({key(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "config":
            out["config"].update({key(i): json.loads(i.value_json) for i in record.config.update})
        elif kind == "run":
            out["config"].update({key(i): json.loads(i.value_json) for i in record.run.config.update})
    return out
