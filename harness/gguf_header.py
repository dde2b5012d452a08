"""Read a GGUF file's header: scalar metadata and the tensor table, no weights.

gguf's own GGUFReader parses every metadata array into numpy, which took ~6 s
per file for Gemma-3's 262k-token vocabulary; evalq reads headers on every run
(config checks, truncation checks), so this skips arrays and keeps only what it
needs. Type codes and block sizes come from gguf.constants.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from gguf.constants import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGMLQuantizationType, GGUFValueType

_SCALARS = {
    GGUFValueType.UINT8: "B", GGUFValueType.INT8: "b", GGUFValueType.UINT16: "H", GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I", GGUFValueType.INT32: "i", GGUFValueType.FLOAT32: "f", GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q", GGUFValueType.INT64: "q", GGUFValueType.FLOAT64: "d",
}


class GGUFError(ValueError):
    pass


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    type: GGMLQuantizationType
    offset: int  # from the start of the data section

    @property
    def n_bytes(self) -> int:
        block, size = GGML_QUANT_SIZES[self.type]
        n = 1
        for d in self.shape:
            n *= d
        return n // block * size


@dataclass
class GGUFHeader:
    version: int
    metadata: dict[str, Any] = field(default_factory=dict)  # scalars and strings; arrays as their length
    tensors: list[TensorInfo] = field(default_factory=list)
    data_start: int = 0


class _Reader:
    def __init__(self, fh: BinaryIO):
        self.fh = fh

    def take(self, fmt: str) -> Any:
        size = struct.calcsize("<" + fmt)
        raw = self.fh.read(size)
        if len(raw) != size:
            raise GGUFError("header ends early (truncated file)")
        return struct.unpack("<" + fmt, raw)[0]

    def string(self) -> str:
        n = self.take("Q")
        raw = self.fh.read(n)
        if len(raw) != n:
            raise GGUFError("header ends early (truncated file)")
        return raw.decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        self.fh.seek(self.take("Q"), 1)

    def value(self, vtype: GGUFValueType) -> Any:
        if vtype == GGUFValueType.STRING:
            return self.string()
        if vtype == GGUFValueType.ARRAY:
            item = GGUFValueType(self.take("I"))
            count = self.take("Q")
            if item == GGUFValueType.STRING:
                for _ in range(count):
                    self.skip_string()
            elif item == GGUFValueType.ARRAY:
                for _ in range(count):
                    self.value(GGUFValueType.ARRAY)
            else:
                self.fh.seek(struct.calcsize("<" + _SCALARS[item]) * count, 1)
            return count
        return self.take(_SCALARS[vtype])


def read_header(path: Path) -> GGUFHeader:
    with open(path, "rb", buffering=1 << 20) as fh:
        r = _Reader(fh)
        if fh.read(4) != b"GGUF":
            raise GGUFError("not a GGUF file")
        try:
            header = GGUFHeader(version=r.take("I"))
            n_tensors, n_kv = r.take("Q"), r.take("Q")
            for _ in range(n_kv):
                key = r.string()
                header.metadata[key] = r.value(GGUFValueType(r.take("I")))
            for _ in range(n_tensors):
                name = r.string()
                dims = tuple(r.take("Q") for _ in range(r.take("I")))
                header.tensors.append(TensorInfo(name, dims, GGMLQuantizationType(r.take("I")), r.take("Q")))
        except (ValueError, KeyError) as exc:
            if isinstance(exc, GGUFError):
                raise
            raise GGUFError(f"corrupt header: {exc}") from None
        align = int(header.metadata.get("general.alignment", GGUF_DEFAULT_ALIGNMENT))
        header.data_start = -(-fh.tell() // align) * align
    return header
