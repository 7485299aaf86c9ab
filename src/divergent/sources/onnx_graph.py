"""Minimal ONNX protobuf surgery without the `onnx` package: list nodes, expose a node as an output.

ONNX files are protobuf ``ModelProto`` messages; field 7 is the ``GraphProto`` whose field 1
holds ``NodeProto`` (1: input, 2: output, 3: name, 4: op_type) and field 12 the graph outputs
(``ValueInfoProto``: 1 name, 2 type). Only the wire format is needed to append an output, so
intermediate tensors (the pre-logit embedding) can be fetched by onnxruntime in the same run.
"""
from __future__ import annotations

from dataclasses import dataclass


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _enc_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _fields(buf: bytes):
    """Yield (field_number, wire_type, value, start, end) for each top-level field."""
    i, n = 0, len(buf)
    while i < n:
        start = i
        key, i = _varint(buf, i)
        fno, wt = key >> 3, key & 7
        if wt == 0:
            val, i = _varint(buf, i)
        elif wt == 1:
            val, i = buf[i:i + 8], i + 8
        elif wt == 2:
            ln, i = _varint(buf, i)
            val, i = buf[i:i + ln], i + ln
        elif wt == 5:
            val, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wt}")
        yield fno, wt, val, start, i


def _ld(fno: int, payload: bytes) -> bytes:
    return _enc_varint((fno << 3) | 2) + _enc_varint(len(payload)) + payload


@dataclass(frozen=True)
class Node:
    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def _graph(model: bytes) -> bytes:
    for fno, wt, val, _, _ in _fields(model):
        if fno == 7 and wt == 2:
            return val
    raise ValueError("no graph in ONNX model")


def list_nodes(model: bytes) -> list[Node]:
    nodes = []
    for fno, wt, val, _, _ in _fields(_graph(model)):
        if fno == 1 and wt == 2:
            ins, outs, name, op = [], [], "", ""
            for f, w, v, _, _ in _fields(val):
                if w != 2:
                    continue
                if f == 1:
                    ins.append(v.decode())
                elif f == 2:
                    outs.append(v.decode())
                elif f == 3:
                    name = v.decode()
                elif f == 4:
                    op = v.decode()
            nodes.append(Node(name, op, tuple(ins), tuple(outs)))
    return nodes


def graph_outputs(model: bytes) -> list[str]:
    outs = []
    for fno, wt, val, _, _ in _fields(_graph(model)):
        if fno == 12 and wt == 2:
            for f, w, v, _, _ in _fields(val):
                if f == 1 and w == 2:
                    outs.append(v.decode())
    return outs


def add_outputs(model: bytes, names: list[str], elem_type: int = 1) -> bytes:
    """Return the model with tensors ``names`` appended as graph outputs (float by default)."""
    existing = set(graph_outputs(model))
    extra = b""
    for name in names:
        if name in existing:
            continue
        tensor_type = bytes([0x08]) + _enc_varint(elem_type)  # TypeProto.Tensor.elem_type
        type_proto = _ld(1, tensor_type)  # TypeProto.tensor_type
        extra += _ld(12, _ld(1, name.encode()) + _ld(2, type_proto))
    if not extra:
        return model
    out = bytearray()
    for fno, wt, val, start, end in _fields(model):
        if fno == 7 and wt == 2:
            out += _ld(7, val + extra)
        else:
            out += model[start:end]
    return bytes(out)
