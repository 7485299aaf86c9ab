"""Minimal ONNX protobuf surgery without the `onnx` package: list nodes, expose a node as an output, free the input size.

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


# ----------------------------------------------------------------------------- input resolution
# GraphProto 11: input (ValueInfoProto 2: TypeProto 1: Tensor 2: TensorShapeProto 1: Dimension
# (1: dim_value, 2: dim_param)). NodeProto 5: attribute (AttributeProto 1: name).

def _replace_nth(buf: bytes, fno: int, fn, nth: int = 0) -> bytes:
    """``buf`` with the ``nth`` length-delimited field ``fno`` replaced by ``fn(payload)`` (None: dropped)."""
    out, k, hit = bytearray(), 0, False
    for f, wt, val, start, end in _fields(buf):
        if f == fno and wt == 2:
            if k == nth:
                hit = True
                new = fn(val)
                if new is not None:
                    out += _ld(fno, new)
                k += 1
                continue
            k += 1
        out += buf[start:end]
    if not hit:
        raise ValueError(f"protobuf field {fno} #{nth} not found")
    return bytes(out)


def _input_shape(model: bytes) -> bytes:
    vi = next(v for f, w, v, _, _ in _fields(_graph(model)) if f == 11 and w == 2)
    tp = next(v for f, w, v, _, _ in _fields(vi) if f == 2 and w == 2)
    tt = next(v for f, w, v, _, _ in _fields(tp) if f == 1 and w == 2)
    return next((v for f, w, v, _, _ in _fields(tt) if f == 2 and w == 2), b"")


def input_dims(model: bytes) -> list[int | str | None]:
    """The first graph input's dims: an int (fixed), a str (symbolic) or None (unknown)."""
    dims: list[int | str | None] = []
    for f, w, dim, _, _ in _fields(_input_shape(model)):
        if f == 1 and w == 2:
            d: int | str | None = None
            for g, x, v, _, _ in _fields(dim):
                if g == 1 and x == 0:
                    d = v
                elif g == 2 and x == 2:
                    d = v.decode()
            dims.append(d)
    return dims


def symbolic_input_dims(model: bytes, axes) -> bytes:
    """The model with the first graph input's ``axes`` made symbolic (``dim_param`` ``in_<axis>``)."""
    def shape(buf):
        for a in axes:
            buf = _replace_nth(buf, 1, lambda _d, a=a: _ld(2, f"in_{a}".encode()), nth=a)
        return buf

    def graph(g):
        return _replace_nth(g, 11, lambda vi: _replace_nth(vi, 2, lambda tp: _replace_nth(
            tp, 1, lambda tt: _replace_nth(tt, 2, shape))))

    return _replace_nth(model, 7, graph)


_PASS_THROUGH = ("Reshape", "Flatten", "Squeeze", "Identity", "Transpose")


def globalize_pool(model: bytes, tensor: str) -> bytes:
    """Turn the unpadded ``AveragePool`` that feeds ``tensor`` (through reshapes only) into ``GlobalAveragePool``.

    A pool whose output is flattened into a fixed-width embedding covers the whole feature map
    at the graph's native resolution, so it is a global pool there; made explicit, the graph
    runs at other input sizes. Returns the model unchanged when no such pool exists.
    """
    nodes = list_nodes(model)
    producer = {o: i for i, n in enumerate(nodes) for o in n.outputs}
    i = producer.get(tensor)
    while i is not None and nodes[i].op_type in _PASS_THROUGH:
        i = producer.get(nodes[i].inputs[0])
    if i is None or nodes[i].op_type != "AveragePool":
        return model
    attrs = {}
    node_bytes = [v for f, w, v, _, _ in _fields(_graph(model)) if f == 1 and w == 2][i]
    for f, w, v, _, _ in _fields(node_bytes):
        if f == 5 and w == 2:
            a = dict((g, x) for g, _, x, _, _ in _fields(v))
            attrs[a.get(1, b"").decode()] = v
    if "pads" in attrs or attrs.get("auto_pad", b"VALID").find(b"SAME") >= 0:
        return model

    def node(nb):
        out = bytearray()
        for f, w, v, start, end in _fields(nb):
            if f == 5 and w == 2:
                continue  # GlobalAveragePool takes no attributes
            out += _ld(4, b"GlobalAveragePool") if f == 4 and w == 2 else nb[start:end]
        return bytes(out)

    return _replace_nth(model, 7, lambda g: _replace_nth(g, 1, node, nth=i))
