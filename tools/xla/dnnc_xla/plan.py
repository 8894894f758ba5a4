"""Reading and checking a `dnnc.accpar.plan` file (docs/plan-schema.md), and turning each
layer's splits into the mesh axes each tensor dimension is sharded over."""

from __future__ import annotations

import json
from dataclasses import dataclass

from .dnn import Function
from .model import layers_of

SCHEMA, VERSION = "dnnc.accpar.plan", 1
TYPES = ("I", "II", "III")


class PlanError(Exception):
    """A plan that cannot run, naming the layer and what is wrong."""


@dataclass
class LayerPlan:
    """One layer's type per mesh axis (level), and how its shares were rounded."""

    name: str
    types: list[str]
    roundings: list[str]


@dataclass
class Plan:
    """A checked plan: the strategy, the mesh (2 devices per level) and its layers."""

    strategy: str
    levels: int
    devices: int
    layers: list[LayerPlan]
    raw: dict


def load(path: str) -> dict:
    """The plan document, or a PlanError that says why it is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise PlanError(f"cannot read plan '{path}': {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise PlanError(f"plan '{path}' is not JSON: {e}") from None


def check(doc: dict, f: Function) -> Plan:
    """Checks `doc` against function `f` and realises it on a mesh of 2×…×2 devices."""
    if doc.get("schema") != SCHEMA:
        raise PlanError(f"not a dnnc plan: schema is {doc.get('schema')!r}, expected {SCHEMA!r}")
    if doc.get("version") != VERSION:
        raise PlanError(
            f"plan version {doc.get('version')!r}: this reader takes version {VERSION}; "
            "write it again with this dnnc's `partition --emit-plan`"
        )
    levels, devices = doc.get("levels"), doc.get("devices")
    if not isinstance(levels, int) or not isinstance(devices, list) or len(devices) != 2**levels:
        raise PlanError(
            f"the plan's {len(devices) if isinstance(devices, list) else '?'} devices are not a "
            f"balanced binary tree of {levels} levels: an XLA mesh splits each axis in two"
        )
    model_layers = [f.ops[i] for i in layers_of(f)]
    layers = doc.get("layers")
    if not isinstance(layers, list) or len(layers) != len(model_layers):
        n = len(layers) if isinstance(layers, list) else "no"
        raise PlanError(
            f"the plan has {n} layers but @{f.name} has {len(model_layers)} conv/linear layers: "
            "was it emitted for another model?"
        )
    out = []
    for index, (entry, op) in enumerate(zip(layers, model_layers)):
        name = entry.get("name", f"#{index}")
        where = f"layer {index} ({name})"
        weight = entry.get("weight")
        op_weight = op.operands[1] if len(op.operands) > 1 else None
        if weight is not None and op_weight is not None and not _same_weight(f, op_weight, weight):
            raise PlanError(f"{where}: the plan's weight @{weight} is not the model's layer {index}")
        splits = entry.get("splits")
        if not isinstance(splits, list):
            raise PlanError(f"{where}: no splits")
        by_level: dict[int, list[dict]] = {}
        for s in splits:
            t = s.get("type")
            if t not in TYPES:
                raise PlanError(f"{where}: unknown partition type {t!r} (expected I, II or III)")
            shares = s.get("shares")
            if (
                not isinstance(shares, list)
                or len(shares) != 2
                or any(not isinstance(x, (int, float)) or x < 0 for x in shares)
                or abs(sum(shares) - 1.0) > 1e-6
            ):
                raise PlanError(f"{where}, node {s.get('node')!r}: shares {shares} do not sum to 1")
            level = s.get("level")
            if not isinstance(level, int) or not 0 <= level < levels:
                raise PlanError(f"{where}: split at level {level!r} outside 0..{levels - 1}")
            by_level.setdefault(level, []).append(s)
        types, roundings = [], []
        for level in range(levels):
            nodes = by_level.get(level, [])
            if len(nodes) != 2**level:
                raise PlanError(f"{where}: level {level} has {len(nodes)} splits, expected {2**level}")
            # One type per mesh axis: XLA shards a dimension over an axis everywhere.
            weight_of = {t: sum(len(n.get("devices", [])) for n in nodes if n["type"] == t) for t in TYPES}
            # max() keeps the first of equals: a tie goes to the earlier node's type.
            chosen = max((n["type"] for n in nodes), key=weight_of.get)
            types.append(chosen)
            for n in nodes:
                if n["type"] != chosen:
                    roundings.append(f"level {level} node {n['node']!r}: type {n['type']} realised as {chosen}")
                a = n["shares"][0]
                if abs(a - 0.5) > 1e-9:
                    roundings.append(
                        f"level {level} node {n['node']!r}: share {a:.4f}/{1 - a:.4f} realised as 0.5/0.5"
                    )
        out.append(LayerPlan(name, types, roundings))
    return Plan(doc.get("strategy", "?"), levels, len(devices), out, doc)


def _same_weight(f: Function, value: str, weight: str) -> bool:
    for op in f.ops:
        if op.results and op.results[0] == value:
            return op.name != "dnn.weight" or op.weight == weight
    return True
