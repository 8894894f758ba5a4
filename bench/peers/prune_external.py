#!/usr/bin/env python3
"""Makes an ONNX model "pruned elsewhere": numpy zeroes 90% of every convolution's
weights but the first, in whole column segments of 8×32 blocks (each block of the
weight's `[K, C·R·S]` GEMM view keeps its strongest tenth of columns, by L2 norm), and
saves the result beside the input. dnnc sees plain dense weights with many zeros; its
`auto` layout has to find the structure.

usage: bench/peers/prune_external.py MODEL.onnx [--rate 0.9] [--block 8x32] [-o OUT.onnx]
"""
import argparse
import os
import sys

import numpy as np


def prune(w, rate, block):
    """Zeroes `rate` of the column segments of `w` ([K, ...]) in `block`-shaped blocks."""
    k = w.shape[0]
    m = w.reshape(k, -1).copy()
    br, bc = block
    for r0 in range(0, k, br):
        for c0 in range(0, m.shape[1], bc):
            seg = m[r0:r0 + br, c0:c0 + bc]
            norms = np.linalg.norm(seg, axis=0)
            keep = max(1, int(round(seg.shape[1] * (1 - rate))))
            drop = np.argsort(norms)[: seg.shape[1] - keep]
            seg[:, drop] = 0.0
    return m.reshape(w.shape)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model")
    p.add_argument("--rate", type=float, default=0.9)
    p.add_argument("--block", default="8x32")
    p.add_argument("-o", "--output")
    args = p.parse_args()
    import onnx
    from onnx import numpy_helper

    block = tuple(int(v) for v in args.block.split("x"))
    model = onnx.load(args.model)
    inits = {i.name: i for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    pruned, zeros, total = 0, 0, 0
    for node in convs[1:]:
        init = inits[node.input[1]]
        w = numpy_helper.to_array(init)
        w = prune(w, args.rate, block)
        init.CopyFrom(numpy_helper.from_array(w.astype(np.float32), init.name))
        pruned += 1
        zeros += int((w == 0).sum())
        total += w.size
    out = args.output or os.path.splitext(args.model)[0] + f".pruned{int(args.rate * 100)}.onnx"
    onnx.save(model, out)
    print(f"{out}: {pruned} convolutions pruned, {zeros / max(total, 1):.1%} of their weights zero",
          file=sys.stderr)


if __name__ == "__main__":
    main()
