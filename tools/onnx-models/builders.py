"""Builders of ONNX models with the onnx helper API and seeded random weights (no
download): the oracle test models and the peer benchmark's models share them."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class Graph:
    """Accumulates nodes and initializers; names come out unique."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.count = [], [], 0

    def name(self, base):
        self.count += 1
        return f"{base}_{self.count}"

    def weight(self, base, shape, scale=None, kind="normal"):
        name = self.name(base)
        if kind == "ones":
            a = np.ones(shape, np.float32)
        elif kind == "var":
            a = self.rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else (shape[0] if shape else 1)
            s = scale if scale is not None else np.sqrt(2.0 / fan_in)
            a = (self.rng.standard_normal(shape) * s).astype(np.float32)
        self.inits.append(numpy_helper.from_array(a, name))
        return name

    def ints(self, base, values):
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.array(values, np.int64), name))
        return name

    def node(self, op, inputs, n_out=1, **attrs):
        outs = [self.name(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.name(op), **attrs))
        return outs[0] if n_out == 1 else outs

    def conv(self, x, cin, cout, k, stride=1, pad=None, group=1, bias=True):
        pad = k // 2 if pad is None else pad
        ins = [x, self.weight("conv.w", [cout, cin // group, k, k])]
        if bias:
            ins.append(self.weight("conv.b", [cout], scale=0.05))
        return self.node("Conv", ins, kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, group=group)

    def bn(self, x, c, gamma=None):
        g = self.weight("bn.scale", [c], kind="ones") if gamma is None else self.weight("bn.scale", [c], scale=gamma)
        return self.node("BatchNormalization", [x, g, self.weight("bn.bias", [c], scale=0.05),
                                                self.weight("bn.mean", [c], scale=0.05), self.weight("bn.var", [c], kind="var")],
                         epsilon=1e-5)

    def linear(self, x, cin, cout):
        return self.node("Gemm", [x, self.weight("fc.w", [cout, cin], scale=np.sqrt(1.0 / cin)),
                                  self.weight("fc.b", [cout], scale=0.05)], transB=1)

    def model(self, inputs, outputs, name):
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
            self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="dnnc")
        m.ir_version = 8
        return m


def resnet18(batch=1, size=224, classes=1000, seed=1):
    g = Graph(seed)
    x = g.conv("input", 3, 64, 7, stride=2, pad=3, bias=False)
    x = g.node("Relu", [g.bn(x, 64)])
    x = g.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for stage, width in enumerate([64, 128, 256, 512]):
        for i in range(2):
            stride = 2 if stage > 0 and i == 0 else 1
            short = x
            if stride != 1 or cin != width:
                short = g.bn(g.conv(x, cin, width, 1, stride=stride, pad=0, bias=False), width)
            y = g.node("Relu", [g.bn(g.conv(x, cin, width, 3, stride=stride, bias=False), width)])
            y = g.bn(g.conv(y, width, width, 3, bias=False), width, gamma=0.2)
            x = g.node("Relu", [g.node("Add", [y, short])])
            cin = width
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x])], axis=1)
    y = g.linear(x, 512, classes)
    return g.model([("input", [batch, 3, size, size])], [y], "resnet18")


def resnet50(batch=1, size=224, classes=1000, seed=7):
    """ResNet-50: bottleneck blocks (1×1, 3×3 with the stride, 1×1 to 4× width)."""
    g = Graph(seed)
    x = g.conv("input", 3, 64, 7, stride=2, pad=3, bias=False)
    x = g.node("Relu", [g.bn(x, 64)])
    x = g.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for stage, (width, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)]):
        out = 4 * width
        for i in range(blocks):
            stride = 2 if stage > 0 and i == 0 else 1
            short = x
            if stride != 1 or cin != out:
                short = g.bn(g.conv(x, cin, out, 1, stride=stride, pad=0, bias=False), out)
            y = g.node("Relu", [g.bn(g.conv(x, cin, width, 1, pad=0, bias=False), width)])
            y = g.node("Relu", [g.bn(g.conv(y, width, width, 3, stride=stride, bias=False), width)])
            y = g.bn(g.conv(y, width, out, 1, pad=0, bias=False), out, gamma=0.2)
            x = g.node("Relu", [g.node("Add", [y, short])])
            cin = out
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x])], axis=1)
    y = g.linear(x, 2048, classes)
    return g.model([("input", [batch, 3, size, size])], [y], "resnet50")


def mobilenet_v2(batch=1, size=224, classes=1000, seed=2):
    g = Graph(seed)

    def cbr(x, cin, cout, k, stride=1, group=1):
        return g.node("Clip", [g.bn(g.conv(x, cin, cout, k, stride=stride, group=group, bias=False), cout),
                               g.weight("zero", [], scale=0.0), g.node("Constant", [], value=numpy_helper.from_array(np.array(6.0, np.float32)))])

    x = cbr("input", 3, 32, 3, stride=2)
    cin = 32
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            y = x if t == 1 else cbr(x, cin, hidden, 1)
            y = cbr(y, hidden, hidden, 3, stride=stride, group=hidden)
            y = g.bn(g.conv(y, hidden, c, 1, pad=0, bias=False), c, gamma=0.2 if stride == 1 and cin == c else None)
            x = g.node("Add", [y, x]) if stride == 1 and cin == c else y
            cin = c
    x = cbr(x, cin, 1280, 1)
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x])], axis=1)
    y = g.linear(x, 1280, classes)
    return g.model([("input", [batch, 3, size, size])], [y], "mobilenet_v2")


def vgg16(batch=1, size=224, classes=1000, seed=3):
    g = Graph(seed)
    x, cin = "input", 3
    for stage, (width, count) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]):
        for _ in range(count):
            x = g.node("Relu", [g.conv(x, cin, width, 3)])
            cin = width
        x = g.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    x = g.node("Flatten", [x], axis=1)
    feat = 512 * (size // 32) ** 2
    x = g.node("Relu", [g.linear(x, feat, 4096)])
    x = g.node("Relu", [g.linear(x, 4096, 4096)])
    y = g.linear(x, 4096, classes)
    return g.model([("input", [batch, 3, size, size])], [y], "vgg16")


def conv_layer(seed=4):
    """A 3×3 convolution, 64 to 64 channels at 56×56 (ResNet's second stage)."""
    g = Graph(seed)
    y = g.conv("input", 64, 64, 3)
    return g.model([("input", [1, 64, 56, 56])], [y], "conv3x3_64")


def matmul_layer(seed=5):
    """[64, 1024] · [1024, 4096]."""
    g = Graph(seed)
    y = g.node("MatMul", ["input", g.weight("w", [1024, 4096], scale=1 / 32)])
    return g.model([("input", [64, 1024])], [y], "matmul_64x1024x4096")


def gru_gates(hidden=1024, seed=8):
    """A GRU layer's gate matrix at batch 1: x[1, 1024] · Wᵀ with W [3072, 1024] (Gemm)."""
    g = Graph(seed)
    w = g.weight("w", [3 * hidden, hidden], scale=np.sqrt(1.0 / hidden))
    y = g.node("Gemm", ["input", w], transB=1)
    return g.model([("input", [1, hidden])], [y], "gru_gates")


def lstm_layer(seq=32, batch=1, hidden=1024, seed=6):
    """One LSTM layer, hidden 1024, over 32 steps."""
    g = Graph(seed)
    s = 1 / np.sqrt(hidden)
    w = g.weight("lstm.w", [1, 4 * hidden, hidden], scale=s)
    r = g.weight("lstm.r", [1, 4 * hidden, hidden], scale=s)
    b = g.weight("lstm.b", [1, 8 * hidden], scale=0.05)
    y, _, _ = g.node("LSTM", ["input", w, r, b], n_out=3, hidden_size=hidden)
    return g.model([("input", [seq, batch, hidden])], [y], "lstm_1024")


def attention_block(tokens=128, width=256, heads=4, seed=9):
    """A transformer's self-attention block with separate Q, K and V projections (the zoo's
    `attention_block`): 128 tokens of width 256, 4 heads, the output projection and the
    residual."""
    g = Graph(seed)
    head = width // heads
    split = g.ints("heads", [tokens, heads, head])

    def heads_of(perm):
        y = g.linear("input", width, width)
        return g.node("Transpose", [g.node("Reshape", [y, split])], perm=perm)

    q, k, v = heads_of([1, 0, 2]), heads_of([1, 2, 0]), heads_of([1, 0, 2])
    scale = g.name("scale")
    g.inits.append(numpy_helper.from_array(np.array([1 / np.sqrt(head)], np.float32), scale))
    scores = g.node("Softmax", [g.node("Mul", [g.node("MatMul", [q, k]), scale])], axis=-1)
    context = g.node("Transpose", [g.node("MatMul", [scores, v])], perm=[1, 0, 2])
    merged = g.node("Reshape", [context, g.ints("tokens", [tokens, width])])
    y = g.node("Add", [g.linear(merged, width, width), "input"])
    return g.model([("input", [tokens, width])], [y], "attention")


PEER_MODELS = {
    "attention": attention_block,
    "resnet18": resnet18,
    "resnet50": resnet50,
    "mobilenet_v2": mobilenet_v2,
    "vgg16": vgg16,
    "conv3x3_64": conv_layer,
    "matmul": matmul_layer,
    "lstm": lstm_layer,
    "gru_gates": gru_gates,
}


def save(model, path):
    onnx.save(model, path)
