#!/usr/bin/env python3
"""Writes the TOSA equivalent of the residual-chain benchmark module, so that mlir-opt can
be timed on the same graph as `dnnc opt` (op for op: weights become tosa.const, conv2d
tosa.conv2d, batch_norm a tosa.mul and tosa.add pair's worth of work as one tosa.mul,
relu tosa.clamp, add tosa.add; NCHW shapes become NHWC).

usage: dnn_to_tosa.py target/bench-10k.dnn > target/bench-10k.mlir
"""
import re
import sys

def nhwc(t):
    dims = t.split("x")
    if len(dims) == 5:  # 1x16x8x8xf32 -> 1x8x8x16xf32
        n, c, h, w, e = dims
        return f"{n}x{h}x{w}x{c}x{e}"
    return t

out = ["func.func @main(%x: tensor<1x8x8x16xf32>) -> tensor<1x8x8x16xf32> {"]
weights = {}
for line in open(sys.argv[1]):
    line = line.strip()
    m = re.match(r"dnn\.weight @(\S+) : tensor<(\S+)> =", line)
    if m:
        weights[m.group(1)] = m.group(2)
        continue
    m = re.match(r"(%\S+) = dnn\.(\w+) (.*?)(?: \{.*\})? : tensor<(\S+)>$", line)
    if not m:
        m2 = re.match(r"return (%\S+) :", line)
        if m2:
            out.append(f"  return {m2.group(1)} : tensor<1x8x8x16xf32>")
        continue
    res, op, args, ty = m.groups()
    ty = nhwc(ty)
    if op == "weight":
        shape = weights[args.lstrip("@")]
        dims = shape.split("x")
        if len(dims) == 5:  # OIHW -> OHWI
            o, i, h, w, e = dims
            shape = f"{o}x{h}x{w}x{i}x{e}"
        out.append(f'  {res} = "tosa.const"() {{value = dense<0.5> : tensor<{shape}>}} : () -> tensor<{shape}>')
    elif op == "conv2d":
        x, w = [a.strip() for a in args.split(",")]
        out.append(f'  %b_{res[1:]} = "tosa.const"() {{value = dense<0.0> : tensor<16xf32>}} : () -> tensor<16xf32>')
        out.append(f'  {res} = "tosa.conv2d"({x}, {w}, %b_{res[1:]}) {{pad = [1, 1, 1, 1], stride = [1, 1], dilation = [1, 1]}}'
                   f' : (tensor<{ty}>, tensor<16x3x3x16xf32>, tensor<16xf32>) -> tensor<{ty}>')
    elif op == "batch_norm":
        x, g = [a.strip() for a in args.split(",")][:2]
        out.append(f'  {res} = "tosa.mul"({x}, {g}) {{shift = 0 : i32}} : (tensor<{ty}>, tensor<16xf32>) -> tensor<{ty}>')
    elif op == "relu":
        out.append(f'  {res} = "tosa.clamp"({args}) {{min_int = 0 : i64, max_int = 2147483647 : i64, min_fp = 0.0 : f32, max_fp = 3.40282347E+38 : f32}}'
                   f' : (tensor<{ty}>) -> tensor<{ty}>')
    elif op == "add":
        a, b = [a.strip() for a in args.split(",")]
        out.append(f'  {res} = "tosa.add"({a}, {b}) : (tensor<{ty}>, tensor<{ty}>) -> tensor<{ty}>')
    else:
        sys.exit(f"unhandled op {op}")
out.append("}")
print("\n".join(out))
