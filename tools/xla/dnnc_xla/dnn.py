"""A reader of dnnc's printed IR: the canonical one-op-per-line form `dnnc opt` prints.

Only what a printed module holds: weight declarations (`file<...>` into a .safetensors
sidecar, or inline `dense<...>`), functions, ops with their attribute dictionaries and
result types. Seeded initialisers (`#init<...>`) are dnnc's own: materialise them first
with `dnnc opt --materialize-weights -o OUT.dnn`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

import numpy as np


class DnnError(Exception):
    """A module this reader cannot take, with the place (`file:line`) and the fix."""


@dataclass
class Op:
    """One op: results, name (`dnn.conv2d`), operands, attributes, result shapes."""

    results: list[str]
    name: str
    operands: list[str]
    attrs: dict
    shapes: list[tuple[int, ...]]
    line: int
    weight: str | None = None


@dataclass
class Function:
    """A function: parameters (name, shape), ops in order, returned values."""

    name: str
    params: list[tuple[str, tuple[int, ...]]]
    ops: list[Op] = field(default_factory=list)
    returns: list[str] = field(default_factory=list)


@dataclass
class Module:
    """A module: weights by name (numpy f32 arrays) and functions by name."""

    name: str | None
    weights: dict[str, np.ndarray]
    functions: dict[str, Function]


_SHAPE = re.compile(r"tensor<((?:\d+x)*)([a-z0-9]+)(?:,[^>]*)?>")
_SYMBOL = r'@(?:"((?:[^"\\]|\\.)*)"|([A-Za-z_][A-Za-z0-9_.$]*))'


def _shape(text: str, where: str) -> tuple[int, ...]:
    m = _SHAPE.search(text)
    if not m:
        raise DnnError(f"{where}: expected a tensor type in '{text.strip()}'")
    if m.group(2) != "f32":
        raise DnnError(f"{where}: only f32 tensors are supported, found {m.group(2)}")
    return tuple(int(d) for d in m.group(1).split("x") if d)


def _split_top(text: str, sep: str = ",") -> list[str]:
    """Splits at `sep` outside brackets, braces and strings."""
    out, depth, cur, quoted = [], 0, [], False
    for i, c in enumerate(text):
        if c == '"' and (i == 0 or text[i - 1] != "\\"):
            quoted = not quoted
        if not quoted:
            if c in "[{(<":
                depth += 1
            elif c in "]})>":
                depth -= 1
            elif c == sep and depth == 0:
                out.append("".join(cur))
                cur = []
                continue
        cur.append(c)
    if "".join(cur).strip():
        out.append("".join(cur))
    return out


def _attrs(text: str, where: str) -> dict:
    out = {}
    for entry in _split_top(text):
        key, eq, value = entry.partition("=")
        if not eq:
            raise DnnError(f"{where}: attribute '{entry.strip()}' is not KEY = VALUE")
        try:
            out[key.strip().strip('"')] = json.loads(value.strip())
        except json.JSONDecodeError as e:
            raise DnnError(f"{where}: attribute {key.strip()}: {e}") from None
    return out


def _dense(text: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    body = text.strip()
    if body.startswith('"0x'):
        raw = bytes.fromhex(body[3:-1])
        n = int(np.prod(shape)) if shape else 1
        if len(raw) != 4 * n:
            raise DnnError(f"{where}: {len(raw)} bytes for {n} f32 elements")
        return np.frombuffer(raw, dtype="<f4").reshape(shape).copy()
    values = np.array(json.loads(body.replace("nan", "NaN").replace("inf", "Infinity")), dtype=np.float32)
    if values.ndim == 0:
        return np.full(shape, values, dtype=np.float32)
    return values.reshape(shape)


def _safetensors(path: str):
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except Exception as e:  # noqa: BLE001 - the library raises several kinds
        raise DnnError(f"cannot read weights from '{path}': {e}") from None


def read_module(path: str) -> Module:
    """Reads a printed .dnn module and its weights."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise DnnError(f"cannot read '{path}': {e.strerror}") from None
    base = os.path.dirname(os.path.abspath(path))
    files: dict[str, dict] = {}
    weights: dict[str, np.ndarray] = {}
    functions: dict[str, Function] = {}
    name = None
    func: Function | None = None
    for number, line in enumerate(lines, 1):
        where = f"{path}:{number}"
        text = line.strip()
        if text.startswith("//"):
            continue
        if not text or text == "}":
            if text == "}" and func is not None:
                functions[func.name] = func
                func = None
            continue
        if text.startswith("module"):
            m = re.match(r"module\s*(?:" + _SYMBOL + r")?\s*\{", text)
            if m:
                name = m.group(1) or m.group(2)
            continue
        if text.startswith("dnn.weight") and func is None:
            m = re.match(r"dnn\.weight\s+" + _SYMBOL + r"\s*:\s*(tensor<[^>]*>)\s*=\s*(.*)$", text)
            if not m:
                raise DnnError(f"{where}: cannot read the weight declaration")
            wname = m.group(1) or m.group(2)
            shape = _shape(m.group(3), where)
            init = m.group(4).strip()
            if init.startswith("file<"):
                fm = re.match(r'file<"((?:[^"\\]|\\.)*)"(?:,\s*key\s*=\s*"((?:[^"\\]|\\.)*)")?>', init)
                if not fm:
                    raise DnnError(f"{where}: cannot read '{init}'")
                fpath = os.path.join(base, fm.group(1))
                if fpath not in files:
                    files[fpath] = _safetensors(fpath)
                key = fm.group(2) or wname
                if key not in files[fpath]:
                    raise DnnError(f"{where}: '{fpath}' has no tensor '{key}'")
                value = files[fpath][key].astype(np.float32)
            elif init.startswith("dense<"):
                value = _dense(init[len("dense<"):-1], shape, where)
            else:
                raise DnnError(
                    f"{where}: weight @{wname} has a seeded initialiser; write its values with "
                    f"`dnnc opt {os.path.basename(path)} --materialize-weights -o OUT.dnn`"
                )
            if tuple(value.shape) != shape:
                raise DnnError(f"{where}: weight @{wname} holds {value.shape}, declared {shape}")
            weights[wname] = value
            continue
        if text.startswith("func.func"):
            m = re.match(r"func\.func\s+" + _SYMBOL + r"\((.*)\)\s*->", text)
            if not m:
                raise DnnError(f"{where}: cannot read the function header")
            params = []
            for p in _split_top(m.group(3)):
                pname, _, ptype = p.partition(":")
                params.append((pname.strip().lstrip("%"), _shape(ptype, where)))
            func = Function(m.group(1) or m.group(2), params)
            continue
        if func is None:
            raise DnnError(f"{where}: unexpected '{text}' outside a function")
        if text.startswith("return"):
            body = text[len("return"):].split(":")[0]
            func.returns = [v.strip().lstrip("%") for v in body.split(",") if v.strip()]
            continue
        m = re.match(r"(%[^=]+)=\s*([a-z]+\.[a-z_0-9]+)\s*(.*)$", text)
        if not m:
            raise DnnError(f"{where}: cannot read the op '{text}'")
        results = [r.strip().lstrip("%") for r in m.group(1).split(",")]
        rest = re.sub(r'\s+loc\(".*"\)\s*$', "", m.group(3))
        head, colon, types = rest.rpartition(" : ")
        if not colon:
            raise DnnError(f"{where}: the op has no result type")
        attrs, weight = {}, None
        if "{" in head:
            head, _, dict_text = head.partition("{")
            attrs = _attrs(dict_text.rsplit("}", 1)[0], where)
        if m.group(2) == "dnn.weight":
            wm = re.match(r"\s*" + _SYMBOL, head)
            weight = wm.group(1) or wm.group(2) if wm else None
            operands = []
        elif m.group(2) == "dnn.constant":
            raise DnnError(f"{where}: dnn.constant is not supported by the JAX builder yet")
        else:
            operands = [o.strip().lstrip("%") for o in head.split(",") if o.strip()]
        shapes = [_shape(t, where) for t in _split_top(types)]
        func.ops.append(Op(results, m.group(2), operands, attrs, shapes, number, weight))
    return Module(name, weights, functions)


__all__ = ["DnnError", "Function", "Module", "Op", "read_module"]
