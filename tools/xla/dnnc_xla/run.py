"""One training step of a dnnc model under a dnnc plan on XLA, against the unsharded step."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from . import dnn, plan as plans, shard
from .model import build, loss_fn


# The unsharded step of a model is the same for every plan: computed once per process.
_UNSHARDED: dict = {}


def train_step(forward, lr: float = 0.01):
    """Forward, backward and the weight-gradient (SGD) step: (loss, grads, new params)."""
    loss = loss_fn(forward)

    def step(params, x, labels):
        value, grads = jax.value_and_grad(loss)(params, x, labels)
        new = jax.tree.map(lambda p, g: p - lr * g, params, grads)
        return value, grads, new

    return step


def relative_l2(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = np.linalg.norm(want)
    return float(np.linalg.norm(got - want) / (scale if scale > 0 else 1.0))


def inputs(f, batch: int, seed: int):
    """The step's seeded input batch and integer labels."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((batch,) + f.params[0][1][1:], dtype=np.float32))
    classes = f.ops[-1].shapes[0][-1] if f.ops else 10
    return x, jnp.asarray(rng.integers(0, classes, size=batch), dtype=jnp.int32)


def run(model_path: str, plan_path: str, seed: int = 0, repeats: int = 3) -> dict:
    """Checks the plan (before anything runs), runs the step sharded and unsharded, and
    reports the loss, the worst gradient error, XLA's collectives and the step times."""
    m = dnn.read_module(model_path)
    doc = plans.load(plan_path)
    func = doc.get("function", "main")
    if func not in m.functions:
        raise plans.PlanError(f"the plan is for @{func}, which {model_path} does not define")
    f = m.functions[func]
    plan = plans.check(doc, f)
    batch = int(doc.get("batch", f.params[0][1][0]))
    x, labels = inputs(f, batch, seed)

    forward, params = build(m, func)
    reference = jax.jit(train_step(forward))
    key = (model_path, func, seed, batch)
    if key not in _UNSHARDED:
        _UNSHARDED[key] = reference(params, x, labels)
    want = _UNSHARDED[key]

    mesh = shard.mesh(plan)
    sharded_forward, _ = build(m, func, shardings=shard.Shardings(plan, mesh))
    replicated = NamedSharding(mesh, P())
    step = jax.jit(train_step(sharded_forward))
    # Global arrays built from each process's (identical, seeded) host values, so that the
    # same code runs on one process or several (jax.distributed).
    def place(value):
        host = np.asarray(value)
        return jax.make_array_from_callback(host.shape, replicated, lambda index: host[index])

    args = jax.tree.map(place, (params, x, labels))
    compiled = step.lower(*args).compile()
    got = multihost_utils.process_allgather(compiled(*args), tiled=True)

    def timed(fn, a):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(fn(*a))
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    grads_err = {k: relative_l2(got[1][k], want[1][k]) for k in want[1]}
    # With 64-bit JAX, both f32 steps are also held against the step in f64.
    exact = {}
    if jax.config.jax_enable_x64:
        key64 = key + ("f64",)
        if key64 not in _UNSHARDED:
            wide = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), (params, x))
            _UNSHARDED[key64] = jax.jit(train_step(forward))(*wide, labels)
        e = _UNSHARDED[key64][1]
        exact = {
            "max_gradient_relative_l2_vs_f64": max(relative_l2(got[1][k], e[k]) for k in e),
            "unsharded_max_gradient_relative_l2_vs_f64": max(relative_l2(want[1][k], e[k]) for k in e),
        }
    found = shard.collectives(compiled.as_text(), plan.devices)
    per_layer: dict = {}
    for c in found:
        key = c["layer"] if c["layer"] is not None else "other"
        entry = per_layer.setdefault(key, {})
        kind = entry.setdefault(c["kind"], {"count": 0, "bytes": 0, "received": 0.0})
        kind["count"] += 1
        kind["bytes"] += c["bytes"]
        kind["received"] += c["received"]
    return {
        "model": m.name,
        "strategy": plan.strategy,
        "devices": plan.devices,
        "loss": float(got[0]),
        "loss_unsharded": float(want[0]),
        "loss_relative_error": abs(float(got[0]) - float(want[0])) / max(abs(float(want[0])), 1e-30),
        "max_gradient_relative_l2": max(grads_err.values()),
        "worst_gradient": max(grads_err, key=grads_err.get),
        "max_update_relative_l2": max(relative_l2(got[2][k], want[2][k]) for k in want[2]),
        "roundings": {l.name: l.roundings for l in plan.layers if l.roundings},
        "types": {l.name: l.types for l in plan.layers},
        "collectives": per_layer,
        "collective_ops": found,
        "step_s": timed(compiled, args),
        "step_unsharded_s": timed(reference, (params, x, labels)),
        **exact,
    }
