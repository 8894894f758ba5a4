"""A dnnc function as a JAX function of its weights and inputs (NCHW, like dnnc)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from .dnn import DnnError, Function, Module

#: The ops with a conv/linear layer of ACCPAR's plan.
LAYER_OPS = ("dnn.conv2d", "dnn.linear")


def _pads(pad) -> list[tuple[int, int]]:
    top, left, bottom, right = pad if len(pad) == 4 else (pad[0], pad[1], pad[0], pad[1])
    return [(top, bottom), (left, right)]


def _op(op, args):
    a = op.attrs
    match op.name:
        case "dnn.conv2d":
            x, w = args[0], args[1]
            y = lax.conv_general_dilated(
                x,
                w,
                window_strides=tuple(a.get("stride", [1, 1])),
                padding=_pads(a.get("pad", [0, 0, 0, 0])),
                rhs_dilation=tuple(a.get("dilation", [1, 1])),
                dimension_numbers=("NCHW", "OIHW", "NCHW"),
                feature_group_count=a.get("groups", 1),
                precision=lax.Precision.HIGHEST,
            )
            return y + args[2][None, :, None, None] if len(args) > 2 else y
        case "dnn.linear":
            y = jnp.matmul(args[0], args[1].T, precision=lax.Precision.HIGHEST)
            return y + args[2] if len(args) > 2 else y
        case "dnn.batch_norm":
            x, scale, shift, mean, var = args
            c = lambda v: v[None, :, None, None] if x.ndim == 4 else v[None, :]  # noqa: E731
            eps = a.get("epsilon", 1e-5)
            return c(scale) * (x - c(mean)) / jnp.sqrt(c(var) + eps) + c(shift)
        case "dnn.relu":
            return jnp.maximum(args[0], 0.0)
        case "dnn.relu6":
            return jnp.clip(args[0], 0.0, 6.0)
        case "dnn.sigmoid":
            return jax.nn.sigmoid(args[0])
        case "dnn.tanh":
            return jnp.tanh(args[0])
        case "dnn.add":
            return args[0] + args[1]
        case "dnn.sub":
            return args[0] - args[1]
        case "dnn.mul":
            return args[0] * args[1]
        case "dnn.max_pool2d" | "dnn.avg_pool2d":
            if a.get("ceil_mode", False):
                raise DnnError(f"line {op.line}: ceil_mode pooling is not supported yet")
            k, s = a["kernel"], a.get("stride", [1, 1])
            pads = [(0, 0), (0, 0)] + _pads(a.get("pad", [0, 0, 0, 0]))
            if op.name == "dnn.max_pool2d":
                return lax.reduce_window(
                    args[0], -jnp.inf, lax.max, (1, 1, *k), (1, 1, *s), pads
                )
            total = lax.reduce_window(args[0], 0.0, lax.add, (1, 1, *k), (1, 1, *s), pads)
            if a.get("count_include_pad", False) or all(p == (0, 0) for p in pads):
                return total / (k[0] * k[1])
            ones = jnp.ones(args[0].shape[2:], args[0].dtype)[None, None]
            count = lax.reduce_window(ones, 0.0, lax.add, (1, 1, *k), (1, 1, *s), pads)
            return total / count
        case "dnn.global_avg_pool2d":
            return jnp.mean(args[0], axis=(2, 3), keepdims=True)
        case "dnn.flatten":
            return args[0].reshape(args[0].shape[0], -1)
        case "dnn.reshape":
            return args[0].reshape((args[0].shape[0],) + op.shapes[0][1:])
        case "dnn.softmax":
            return jax.nn.softmax(args[0], axis=a.get("axis", -1))
        case "dnn.concat":
            return jnp.concatenate(args, axis=a["axis"])
        case _:
            raise DnnError(f"line {op.line}: {op.name} has no JAX form yet")


def layers_of(f: Function) -> list[int]:
    """Indices (into f.ops) of the conv/linear ops, in program order: ACCPAR's layers."""
    return [i for i, op in enumerate(f.ops) if op.name in LAYER_OPS]


def build(m: Module, func: str = "main", shardings=None, tap=None) -> tuple[Callable, dict]:
    """`forward(params, *inputs) -> outputs` and the params (every weight, by name).

    `shardings` (a `shard.Shardings`) constrains each layer's operands and result
    (`layer(index, args) -> (args, post)`) and the activations between layers
    (`keep(index, value)`, index the layer whose output the value derives from): how a
    plan applies. Each layer runs in a `layerN` named scope and the ops between layer
    N−1 and layer N in `intoN`, so that XLA's collectives can be traced to a layer.
    `tap(op, args)` sees every op's operands as it runs.
    """
    if func not in m.functions:
        raise DnnError(f"the module has no function @{func}")
    f = m.functions[func]
    layer_ops = layers_of(f)
    layer_at = {op_index: l for l, op_index in enumerate(layer_ops)}
    into, scope = {}, "after"
    for i in reversed(range(len(f.ops))):
        into[i] = scope
        if i in layer_at:
            scope = f"into{layer_at[i]}"

    def forward(params, *inputs):
        env = {name: x for (name, _), x in zip(f.params, inputs)}
        # The layer whose output partition each activation carries.
        source: dict[str, int] = {}
        for i, op in enumerate(f.ops):
            if op.name == "dnn.weight":
                env[op.results[0]] = params[op.weight]
                continue
            args = [env[o] for o in op.operands]
            if tap is not None:
                tap(op, args)
            if shardings is None:
                y = _op(op, args)
            elif i in layer_at:
                with jax.named_scope(f"layer{layer_at[i]}"):
                    args, post = shardings.layer(layer_at[i], args)
                    y = post(_op(op, args))
                source[op.results[0]] = layer_at[i]
            else:
                with jax.named_scope(into[i]):
                    y = _op(op, args)
                    src = next((source[o] for o in op.operands if o in source), None)
                    if src is not None:
                        y = shardings.keep(src, y)
                        source[op.results[0]] = src
            env[op.results[0]] = y
        return [env[r] for r in f.returns]

    params = {name: jnp.asarray(v) for name, v in m.weights.items()}
    return forward, params


def max_pool_flips(m: Module, func: str, x, wide_dtype) -> list[tuple[int, int]]:
    """Per 2×2/stride-2 max-pool of the forward pass, (windows, windows whose maximum
    moves) between the step at its own precision and at `wide_dtype`: a window whose two
    largest values lie within rounding routes its gradient elsewhere when the maximum
    moves, which changes every earlier layer's gradient (the gradient is discontinuous
    there)."""

    def pool_inputs(params, x):
        seen = []

        def tap(op, args):
            a = op.attrs
            if op.name == "dnn.max_pool2d" and a.get("kernel") == [2, 2] and a.get("stride") == [2, 2]:
                seen.append(args[0])

        build(m, func, tap=tap)[0](params, x)
        return seen

    _, params = build(m, func)
    narrow = jax.jit(pool_inputs)(params, x)
    wide = jax.jit(pool_inputs)(jax.tree.map(lambda v: jnp.asarray(v, wide_dtype), params), jnp.asarray(x, wide_dtype))
    out = []
    for a, b in zip(narrow, wide):
        n, c, h, w = a.shape

        def windows(t):
            t = jnp.asarray(t)[:, :, : h - h % 2, : w - w % 2]
            return t.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(-1, 4)

        moved = int(jnp.sum(jnp.argmax(windows(a), -1) != jnp.argmax(windows(b), -1)))
        out.append((n * c * (h // 2) * (w // 2), moved))
    return out


def loss_fn(forward: Callable) -> Callable:
    """Mean softmax cross-entropy of the first output against integer labels."""

    def loss(params, x, labels):
        logits = forward(params, x)[0]
        logp = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))

    return loss
