"""A plan's layers as sharding constraints on a JAX device mesh, and XLA's collectives."""

from __future__ import annotations

import re

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from .plan import Plan


def mesh(plan: Plan) -> Mesh:
    """Devices 0..n on a 2×…×2 mesh, axis `l0` the top split (device index's high bit)."""
    devices = jax.devices()
    if len(devices) < plan.devices:
        raise RuntimeError(
            f"the plan needs {plan.devices} devices, JAX has {len(devices)}: set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={plan.devices}"
        )
    grid = np.array(devices[: plan.devices]).reshape((2,) * plan.levels)
    return Mesh(grid, tuple(f"l{i}" for i in range(plan.levels)))


def _axes(types: list[str], want: str):
    axes = tuple(f"l{i}" for i, t in enumerate(types) if t == want)
    return None if not axes else axes[0] if len(axes) == 1 else axes


class Shardings:
    """A plan as sharding constraints, the `shardings` of `model.build`: at each conv/linear
    layer, type I shards the batch over the mesh axes of the levels that chose it, II the
    input channels (and the weight's input dimension), III the output channels (the
    weight's output dimension and the bias); the ops after a layer keep its output's
    partition until the next layer converts it, which is where ACCPAR prices conversions."""

    def __init__(self, plan: Plan, m: Mesh):
        self.plan, self.mesh = plan, m

    def _spec(self, index: int):
        types = self.plan.layers[index].types
        return _axes(types, "I"), _axes(types, "II"), _axes(types, "III")

    def _constrain(self, x, *spec):
        spec = spec + (None,) * (x.ndim - len(spec))
        return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, P(*spec)))

    def layer(self, index: int, args: list):
        """Layer `index`'s operands constrained, and `post(result)` constraining its result."""
        batch, cin, cout = self._spec(index)
        x, w = self._constrain(args[0], batch, cin), self._constrain(args[1], cout, cin)
        bias = [self._constrain(args[2], cout)] if len(args) > 2 else []
        return [x, w] + bias, lambda y: self._constrain(y, batch, cout)

    def keep(self, index: int, y):
        """An activation derived from layer `index`'s output, in that output's partition
        (batch, then channels; a flattened NCHW tensor's channels lead its features)."""
        if y.ndim < 2:
            return y
        batch, _, cout = self._spec(index)
        return self._constrain(y, batch, cout)


_COLLECTIVE = re.compile(
    r"=\s*(\(?[^=]*?\)?)\s+(all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)(?:-start)?\("
)
_ARRAY = re.compile(r"([a-z]+\d*)\[([\d,]*)\]")
_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "pred": 1, "s8": 1, "u8": 1, "f64": 8}


def _group_size(line: str, devices: int) -> int:
    """How many devices take part in each group of a collective (its `replica_groups`)."""
    iota = re.search(r"replica_groups=\[(\d+),(\d+)\]<=", line)
    if iota:
        return int(iota.group(2))
    listed = re.search(r"replica_groups=\{\{([\d,]*)\}", line)
    if listed:
        return len([d for d in listed.group(1).split(",") if d])
    return devices  # `replica_groups={}`: every device


def received_bytes(kind: str, result_bytes: int, group: int) -> float:
    """Bytes one device receives in a collective with bandwidth-optimal (ring) algorithms:
    what ACCPAR's model counts (each side receives what it lacks)."""
    if group <= 1:
        return 0.0
    share = (group - 1) / group
    match kind:
        case "all-reduce":  # reduce-scatter, then all-gather, of the result
            return 2 * share * result_bytes
        case "all-gather" | "all-to-all":
            return share * result_bytes
        case "reduce-scatter":  # the input is `group` results
            return (group - 1) * result_bytes
        case "collective-permute":
            return float(result_bytes)
    raise ValueError(f"not a collective: {kind}")


def collectives(hlo: str, devices: int = 1) -> list[dict]:
    """Every collective in compiled HLO text: kind, bytes of its result, the size of its
    device groups, the bytes one device receives, and the layer from the named scope in its
    metadata (`layerN`: the layer's own ops, `intoN`: the ops between layer N-1 and N;
    `where` says which) or None."""
    out = []
    for line in hlo.splitlines():
        m = _COLLECTIVE.search(line)
        if not m:
            continue
        size = 0
        for elem, dims in _ARRAY.findall(m.group(1)):
            n = int(np.prod([int(d) for d in dims.split(",") if d])) if dims else 1
            size += n * _BYTES.get(elem, 4)
        name = re.search(r'op_name="([^"]*)"', line)
        op_name = name.group(1) if name else ""
        # The innermost dnnc scope in the op's name: its layer, or the ops leading into it.
        scopes = re.findall(r"\b(layer|into)(\d+)", op_name)
        where, layer = (scopes[-1][0], int(scopes[-1][1])) if scopes else (None, None)
        kind = m.group(2)
        group = 2 if kind == "collective-permute" else _group_size(line, devices)
        out.append(
            {
                "kind": kind,
                "bytes": size,
                "group": group,
                "received": received_bytes(kind, size, group),
                "layer": layer,
                "where": where,
                "op_name": op_name,
            }
        )
    return out
