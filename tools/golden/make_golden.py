#!/usr/bin/env python3
"""Golden cases for the reference interpreter, computed by ONNX Runtime.

Each case is one ONNX operator on small seeded random inputs. For each, this writes
`backends/reference/tests/golden/<case>/`:
  case.dnn      the same computation in dnnc's IR, every tensor a function parameter
  <param>.npy   the inputs, named after the parameters
  out<i>.npy    ONNX Runtime's outputs

The Rust test `backends/reference/tests/golden.rs` runs case.dnn on the reference
interpreter and compares. CI needs no Python: the files are checked in.

Setup: python3 -m venv /tmp/golden && /tmp/golden/bin/pip install numpy onnx onnxruntime
Run:   /tmp/golden/bin/python tools/golden/make_golden.py [integers]   (integers: only the i32/i8 arithmetic cases)
"""
import os
import sys
import shutil

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "backends", "reference", "tests", "golden")
rng = np.random.default_rng(20261127)


def rand(*shape, low=-1.0, high=1.0):
    return rng.uniform(low, high, size=shape).astype(np.float32)


#: dnnc's and ONNX's names of each element type the cases use.
ELEMS = {np.dtype(np.float32): ("f32", TensorProto.FLOAT), np.dtype(np.int32): ("i32", TensorProto.INT32),
         np.dtype(np.int8): ("i8", TensorProto.INT8)}


def ty(a):
    return "tensor<" + "".join(f"{d}x" for d in a.shape) + ELEMS[a.dtype][0] + ">"


def run_onnx(node, inputs, outputs, opset=17, initializers=()):
    """Runs one ONNX node; `inputs` is a list of (name, array), `outputs` output names,
    `initializers` (name, int64 array) constants such as a Reshape's shape."""
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, ELEMS[a.dtype][1], a.shape) for n, a in inputs],
        [helper.make_tensor_value_info(n, ELEMS[inputs[0][1].dtype][1], None) for n in outputs],
        initializer=[helper.make_tensor(n, TensorProto.INT64, a.shape, a.tolist()) for n, a in initializers],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(outputs, dict(inputs))


def write_case(name, params, body, results):
    """params: list of (name, array); body: IR lines using %name; results: list of arrays
    with their IR value names."""
    d = os.path.join(ROOT, name)
    os.makedirs(d, exist_ok=True)
    sig = ", ".join(f"%{n}: {ty(a)}" for n, a in params)
    res_types = [ty(a) for _, a in results]
    ret = ", ".join(f"%{n}" for n, _ in results)
    head = res_types[0] if len(res_types) == 1 else "(" + ", ".join(res_types) + ")"
    text = f"// Golden case {name}: expected outputs computed by ONNX Runtime {ort.__version__}.\n"
    text += f"func.func @main({sig}) -> {head} {{\n"
    text += "".join(f"  {line}\n" for line in body)
    text += f"  return {ret} : {', '.join(res_types)}\n}}\n"
    with open(os.path.join(d, "case.dnn"), "w") as f:
        f.write(text)
    for n, a in params:
        np.save(os.path.join(d, f"{n}.npy"), a)
    for i, (_, a) in enumerate(results):
        np.save(os.path.join(d, f"out{i}.npy"), np.ascontiguousarray(a))


def conv(name, x, w, b, strides, pads, dilations, group):
    inputs = [("x", x), ("w", w)] + ([("b", b)] if b is not None else [])
    node = helper.make_node("Conv", [n for n, _ in inputs], ["y"], strides=strides, pads=pads,
                            dilations=dilations, group=group)
    (y,) = run_onnx(node, inputs, ["y"])
    operands = ", ".join(f"%{n}" for n, _ in inputs)
    attrs = f"{{stride = {strides}, pad = {pads}, dilation = {dilations}, groups = {group}}}"
    write_case(name, inputs, [f"%y = dnn.conv2d {operands} {attrs} : {ty(y)}"], [("y", y)])


def pool(name, op, x, kernel, strides, pads, ceil=0, count_include_pad=0):
    extra = {"count_include_pad": count_include_pad} if op == "AveragePool" else {}
    node = helper.make_node(op, ["x"], ["y"], kernel_shape=kernel, strides=strides, pads=pads, ceil_mode=ceil, **extra)
    (y,) = run_onnx(node, [("x", x)], ["y"])
    dnn = "dnn.max_pool2d" if op == "MaxPool" else "dnn.avg_pool2d"
    attrs = f"kernel = {kernel}, stride = {strides}, pad = {pads}, ceil_mode = {'true' if ceil else 'false'}"
    if op == "AveragePool":
        attrs += f", count_include_pad = {'true' if count_include_pad else 'false'}"
    write_case(name, [("x", x)], [f"%y = {dnn} %x {{{attrs}}} : {ty(y)}"], [("y", y)])


def simple(name, onnx_op, dnn_op, inputs, attrs="", onnx_attrs=None, opset=17, consts=()):
    """One ONNX node and its dnnc op; `consts` are ONNX-only int64 inputs (a Reshape's
    shape, a Slice's bounds), which dnnc states as attributes."""
    names = [n for n, _ in inputs] + [n for n, _ in consts]
    node = helper.make_node(onnx_op, names, ["y"], **(onnx_attrs or {}))
    (y,) = run_onnx(node, inputs, ["y"], opset, [(n, np.array(v, np.int64)) for n, v in consts])
    operands = ", ".join(f"%{n}" for n, _ in inputs)
    write_case(name, inputs, [f"%y = {dnn_op} {operands}{attrs} : {ty(y)}"], [("y", y)])


def lstm(name, t, b, i, h, with_state):
    x, w, r, bias = rand(t, b, i), rand(1, 4 * h, i), rand(1, 4 * h, h), rand(1, 8 * h)
    inputs = [("x", x), ("w", w), ("r", r), ("b", bias)]
    names = ["x", "w", "r", "b"]
    if with_state:
        h0, c0 = rand(1, b, h), rand(1, b, h)
        inputs += [("h0", h0), ("c0", c0)]
        names += ["", "h0", "c0"]  # sequence_lens is skipped
    node = helper.make_node("LSTM", names, ["y", "yh", "yc"], hidden_size=h)
    y, yh, yc = run_onnx(node, inputs, ["y", "yh", "yc"])
    params = [("x", x), ("w", w[0]), ("r", r[0]), ("b", bias[0])]
    if with_state:
        params += [("h0", h0[0]), ("c0", c0[0])]
    operands = ", ".join(f"%{n}" for n, _ in params)
    y, yh, yc = y[:, 0], yh[0], yc[0]
    body = [f"%y, %yh, %yc = dnn.lstm {operands} : {ty(y)}, {ty(yh)}, {ty(yc)}"]
    write_case(name, params, body, [("y", y), ("yh", yh), ("yc", yc)])


def gru(name, t, b, i, h, linear_before_reset, with_state):
    x, w, r, bias = rand(t, b, i), rand(1, 3 * h, i), rand(1, 3 * h, h), rand(1, 6 * h)
    inputs = [("x", x), ("w", w), ("r", r), ("b", bias)]
    names = ["x", "w", "r", "b"]
    if with_state:
        h0 = rand(1, b, h)
        inputs += [("h0", h0)]
        names += ["", "h0"]
    node = helper.make_node("GRU", names, ["y", "yh"], hidden_size=h, linear_before_reset=linear_before_reset)
    y, yh = run_onnx(node, inputs, ["y", "yh"])
    params = [("x", x), ("w", w[0]), ("r", r[0]), ("b", bias[0])] + ([("h0", h0[0])] if with_state else [])
    operands = ", ".join(f"%{n}" for n, _ in params)
    lbr = " {linear_before_reset = true}" if linear_before_reset else ""
    y, yh = y[:, 0], yh[0]
    write_case(name, params, [f"%y, %yh = dnn.gru {operands}{lbr} : {ty(y)}, {ty(yh)}"], [("y", y), ("yh", yh)])


def integer_cases():
    """Every op that takes integers, on i32 and i8: Add, Sub, Mul and Div overflowing and
    dividing negative numbers (ONNX Runtime wraps at the element's width and divides
    toward zero: dnnc's `ir::ops::Arith`), and Reshape, Flatten, Transpose, Concat and
    Slice over the whole range of the type."""
    for dtype in (np.int32, np.int8):
        info = np.iinfo(dtype)
        a = np.array([info.max, info.min, -7, 7, -7, 100, info.min, 5], dtype)
        b = np.array([1, -1, 2, -2, -2, 3, -1, 1], dtype)
        if dtype == np.int32:
            a[6] = info.min + 1  # INT_MIN / -1 traps in ONNX Runtime's C++ division
        name = ELEMS[np.dtype(dtype)][0]
        for op in ("Add", "Sub", "Mul", "Div"):
            simple(f"{op.lower()}_{name}", op, f"dnn.{op.lower()}", [("a", a), ("b", b)])
        # The ops that move integers without computing: every element kept exactly.
        x = rng.integers(info.min, info.max, size=(2, 3, 4), endpoint=True).astype(dtype)
        y = rng.integers(info.min, info.max, size=(2, 1, 4), endpoint=True).astype(dtype)
        simple(f"reshape_{name}", "Reshape", "dnn.reshape", [("x", x)], " {shape = [4, -1]}",
               consts=[("shape", [4, -1])])
        simple(f"flatten_{name}", "Flatten", "dnn.flatten", [("x", x)], " {axis = 1}", {"axis": 1})
        simple(f"transpose_{name}", "Transpose", "dnn.transpose", [("x", x)], " {perm = [1, 2, 0]}",
               {"perm": [1, 2, 0]})
        simple(f"concat_{name}", "Concat", "dnn.concat", [("x", x), ("z", y)], " {axis = -2}", {"axis": -2})
        simple(f"slice_{name}", "Slice", "dnn.slice", [("x", x)], " {axis = -1, start = 1, end = 3}",
               consts=[("starts", [1]), ("ends", [3]), ("axes", [-1])])


def main():
    if sys.argv[1:] == ["integers"]:  # only the integer cases
        integer_cases()
        return
    shutil.rmtree(ROOT, ignore_errors=True)
    integer_cases()
    # Convolutions: stride, padding (asymmetric too), dilation, groups, depthwise, bias.
    conv("conv2d_basic", rand(1, 3, 7, 7), rand(4, 3, 3, 3), rand(4), [1, 1], [1, 1, 1, 1], [1, 1], 1)
    conv("conv2d_stride_pad", rand(2, 3, 9, 8), rand(5, 3, 3, 2), None, [2, 3], [0, 1, 2, 1], [1, 1], 1)
    conv("conv2d_dilation", rand(1, 2, 10, 10), rand(3, 2, 3, 3), rand(3), [1, 1], [2, 2, 2, 2], [2, 2], 1)
    conv("conv2d_groups", rand(1, 4, 6, 6), rand(6, 2, 3, 3), rand(6), [1, 1], [1, 1, 1, 1], [1, 1], 2)
    conv("conv2d_depthwise", rand(1, 5, 8, 8), rand(5, 1, 3, 3), rand(5), [2, 2], [1, 1, 1, 1], [1, 1], 5)
    # Pooling: padding, stride, ceil mode, count_include_pad, global.
    pool("max_pool_pad", "MaxPool", rand(1, 2, 7, 7), [3, 3], [2, 2], [1, 1, 1, 1])
    pool("max_pool_ceil", "MaxPool", rand(1, 2, 8, 8), [3, 3], [2, 2], [0, 0, 0, 0], ceil=1)
    pool("avg_pool_exclude_pad", "AveragePool", rand(1, 3, 7, 6), [3, 3], [2, 2], [1, 1, 1, 1])
    pool("avg_pool_include_pad", "AveragePool", rand(1, 3, 7, 6), [3, 2], [2, 1], [1, 0, 1, 1], count_include_pad=1)
    simple("global_avg_pool", "GlobalAveragePool", "dnn.global_avg_pool2d", [("x", rand(2, 3, 5, 4))])
    # Normalisation and softmax.
    simple("batch_norm", "BatchNormalization", "dnn.batch_norm",
           [("x", rand(2, 3, 4, 5)), ("scale", rand(3)), ("bias", rand(3)), ("mean", rand(3)),
            ("var", rand(3, low=0.5, high=2.0))], " {epsilon = 0.001}", {"epsilon": 0.001})
    simple("softmax_last", "Softmax", "dnn.softmax", [("x", rand(3, 7, low=-5, high=5))])
    simple("softmax_axis1", "Softmax", "dnn.softmax", [("x", rand(2, 4, 3, low=-5, high=5))], " {axis = 1}", {"axis": 1})
    # Broadcasting arithmetic.
    simple("add_broadcast", "Add", "dnn.add", [("a", rand(2, 3, 4)), ("b", rand(3, 1))])
    simple("sub_broadcast", "Sub", "dnn.sub", [("a", rand(4)), ("b", rand(2, 3, 1))])
    simple("mul_broadcast", "Mul", "dnn.mul", [("a", rand(2, 1, 4)), ("b", rand(3, 1))])
    simple("div_broadcast", "Div", "dnn.div", [("a", rand(2, 3)), ("b", rand(1, 3, low=0.5, high=2.0))])
    # Matrix products.
    simple("matmul_batched", "MatMul", "dnn.matmul", [("a", rand(2, 1, 3, 4)), ("b", rand(5, 4, 2))])
    simple("linear", "Gemm", "dnn.linear", [("x", rand(3, 4)), ("w", rand(5, 4)), ("b", rand(5))], "", {"transB": 1})
    # Activations.
    simple("relu", "Relu", "dnn.relu", [("x", rand(3, 4, low=-2, high=2))])
    simple("sigmoid", "Sigmoid", "dnn.sigmoid", [("x", rand(3, 4, low=-8, high=8))])
    simple("tanh", "Tanh", "dnn.tanh", [("x", rand(3, 4, low=-3, high=3))])
    # Shapes.
    simple("transpose", "Transpose", "dnn.transpose", [("x", rand(2, 3, 4))], " {perm = [2, 0, 1]}", {"perm": [2, 0, 1]})
    simple("flatten", "Flatten", "dnn.flatten", [("x", rand(2, 3, 4))], " {axis = 2}", {"axis": 2})
    simple("concat", "Concat", "dnn.concat", [("a", rand(2, 3)), ("b", rand(2, 1)), ("c", rand(2, 2))], " {axis = 1}", {"axis": 1})
    # Recurrent layers (ONNX gate orders: LSTM iofc, GRU zrh).
    lstm("lstm", 4, 2, 3, 5, with_state=False)
    lstm("lstm_initial_state", 3, 2, 4, 3, with_state=True)
    gru("gru", 4, 2, 3, 5, linear_before_reset=0, with_state=False)
    gru("gru_linear_before_reset", 3, 1, 4, 6, linear_before_reset=1, with_state=True)
    print(f"wrote {len(os.listdir(ROOT))} cases to {os.path.normpath(ROOT)}")


if __name__ == "__main__":
    main()
