#!/usr/bin/env python3
"""The ONNX oracle models: small models built with the onnx helper API and seeded random
weights, with ONNX Runtime's outputs. Writes tools/onnx-models/oracle/<name>/:
  model.onnx, input_<i>.npy, output_<i>.npy
The Rust test tools/dnnc/tests/onnx_oracle.rs imports each model, runs it on the reference
interpreter and compares; CI needs no Python because these files are checked in.

Setup: python3 -m venv /tmp/onnx && /tmp/onnx/bin/pip install numpy onnx onnxruntime
Run:   /tmp/onnx/bin/python tools/onnx-models/make_oracle.py
"""
import os
import shutil

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from builders import Graph

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "oracle")


def small_cnn():
    """Every supported op type at least once, including PyTorch-style shape plumbing."""
    g = Graph(11)
    x = g.conv("input", 3, 8, 3, stride=1)                                   # Conv + bias
    x = g.node("Relu", [g.bn(x, 8)])                                          # BatchNormalization, Relu
    d = g.conv(x, 8, 8, 3, group=8, bias=False)                               # depthwise
    six = g.node("Constant", [], value=numpy_helper.from_array(np.array(6.0, np.float32)))
    zero = g.node("Constant", [], value_float=0.0)
    d = g.node("Clip", [d, zero, six])                                        # Clip as relu6
    x = g.node("Concat", [x, d], axis=1)                                      # Concat
    x = g.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])           # MaxPool
    x = g.node("AveragePool", [x], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    x = g.node("Conv", [x, g.weight("conv.w", [4, 16, 1, 1])], kernel_shape=[1, 1], auto_pad="SAME_UPPER")
    s = g.node("Sigmoid", [x])
    t = g.node("Tanh", [x])
    x = g.node("Mul", [s, t])                                                  # Mul
    x = g.node("Sub", [x, g.weight("sub", [4, 1, 1], scale=0.1)])            # Sub, broadcasting
    x = g.node("Div", [x, g.weight("div", [1], kind="var")])                 # Div, broadcasting
    x = g.node("Dropout", [x])                                                # Dropout (inference)
    x = g.node("Identity", [x])                                               # Identity
    # Flatten the PyTorch way: Shape -> Gather -> Unsqueeze -> Concat -> Reshape.
    shape = g.node("Shape", [x])
    batch = g.node("Gather", [shape, g.ints("zero_index", 0)], axis=0)
    batch = g.node("Unsqueeze", [batch, g.ints("axes", [0])])
    target = g.node("Concat", [batch, g.ints("minus_one", [-1])], axis=0)
    x = g.node("Reshape", [x, target])                                        # [2, 64]
    x = g.linear(x, 64, 12)                                                   # Gemm
    x = g.node("Add", [x, g.weight("add", [12], scale=0.1)])                 # Add
    x = g.node("Unsqueeze", [x, g.ints("axes", [1])])                        # [2, 1, 12]
    x = g.node("Transpose", [x], perm=[1, 0, 2])                              # [1, 2, 12]
    x = g.node("Squeeze", [x, g.ints("axes", [0])])                          # [2, 12]
    x = g.node("MatMul", [x, g.weight("mm", [12, 6], scale=0.3)])           # MatMul with a constant
    x = g.node("Cast", [x], to=1)                                             # Cast (no-op)
    y = g.node("Softmax", [x], axis=-1)                                       # Softmax
    f = g.node("Flatten", [g.node("GlobalAveragePool", [d])], axis=1)         # GlobalAveragePool, Flatten
    return g.model([("input", [2, 3, 8, 8])], [y, f], "small_cnn")


def residual_block():
    """ResNet's basic block with a strided 1×1 projection shortcut."""
    g = Graph(12)
    y = g.node("Relu", [g.bn(g.conv("input", 16, 32, 3, stride=2, bias=False), 32)])
    y = g.bn(g.conv(y, 32, 32, 3, bias=False), 32, gamma=0.5)
    s = g.bn(g.conv("input", 16, 32, 1, stride=2, pad=0, bias=False), 32)
    out = g.node("Relu", [g.node("Add", [y, s])])
    return g.model([("input", [1, 16, 12, 12])], [out], "residual_block")


def lstm():
    g = Graph(13)
    h = 16
    w, r = g.weight("w", [1, 4 * h, 8], scale=0.3), g.weight("r", [1, 4 * h, h], scale=0.3)
    b = g.weight("b", [1, 8 * h], scale=0.1)
    h0, c0 = g.weight("h0", [1, 2, h], scale=0.5), g.weight("c0", [1, 2, h], scale=0.5)
    y, yh, _ = g.node("LSTM", ["input", w, r, b, "", h0, c0], n_out=3, hidden_size=h)
    y = g.node("Squeeze", [y, g.ints("axes", [1])])                          # [T, B, H]
    out = g.node("MatMul", [y, g.weight("proj", [h, 5], scale=0.3)])
    return g.model([("input", [6, 2, 8])], [out, yh], "lstm")


def gru():
    g = Graph(14)
    h = 12
    w, r = g.weight("w", [1, 3 * h, 7], scale=0.3), g.weight("r", [1, 3 * h, h], scale=0.3)
    b = g.weight("b", [1, 6 * h], scale=0.1)
    _, yh = g.node("GRU", ["input", w, r, b], n_out=2, hidden_size=h, linear_before_reset=1)
    yh = g.node("Squeeze", [yh, g.ints("axes", [0])])                        # [B, H]
    out = g.linear(yh, h, 4)
    return g.model([("input", [5, 3, 7])], [out], "gru")


def unsupported():
    """Supported ops mixed with ops dnnc does not import: NonZero twice, and Where."""
    g = Graph(15)
    x = g.node("Relu", ["input"])
    nz1 = g.node("NonZero", [x])
    nz2 = g.node("NonZero", ["input"])
    cond = g.node("Greater", [x, g.weight("zero", [1], scale=0.0)])
    w = g.node("Where", [cond, x, "input"])
    return g.model([("input", [4])], [nz1, nz2, w], "unsupported")


def dynamic():
    """An input with a symbolic batch dimension."""
    g = Graph(17)
    y = g.linear("input", 4, 3)
    m = g.model([("input", ["N", 4])], [y], "dynamic")
    return m


def bad_attributes():
    """Supported op types with attributes dnnc cannot map: every node is reported."""
    g = Graph(18)
    h = 4
    w, r = g.weight("w", [2, 4 * h, 3]), g.weight("r", [2, 4 * h, h])
    y, _, _ = g.node("LSTM", ["input", w, r], n_out=3, hidden_size=h, direction="bidirectional")
    c = g.node("Clip", ["input", g.weight("lo", [], scale=0.0), g.weight("hi", [], scale=0.0)])
    return g.model([("input", [5, 1, 3])], [y, c], "bad_attributes")


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    rng = np.random.default_rng(2026)
    cases = {
        "small_cnn": small_cnn(),
        "residual_block": residual_block(),
        "lstm": lstm(),
        "gru": gru(),
    }
    for name, model in cases.items():
        d = os.path.join(OUT, name)
        os.makedirs(d)
        path = os.path.join(d, "model.onnx")
        model.graph.name = name
        onnx.save(model, path)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        feeds = {}
        for i, inp in enumerate(sess.get_inputs()):
            a = rng.standard_normal(inp.shape).astype(np.float32)
            feeds[inp.name] = a
            np.save(os.path.join(d, f"input_{i}.npy"), a)
        for i, out in enumerate(sess.run(None, feeds)):
            np.save(os.path.join(d, f"output_{i}.npy"), np.ascontiguousarray(out, np.float32))
        print(f"{name}: {os.path.getsize(path)} bytes")
    for name, model in [("unsupported", unsupported()), ("dynamic", dynamic()), ("bad_attributes", bad_attributes())]:
        d = os.path.join(OUT, name)
        os.makedirs(d)
        onnx.save(model, os.path.join(d, "model.onnx"))


if __name__ == "__main__":
    main()
