"""One peer engine, kept alive so that the benchmark can alternate rounds between engines
without reloading them: `peer_worker.py ENGINE MODEL THREADS INPUT.npy IN OUT` loads MODEL
(ONNX, or MNN for `mnn`; IN and OUT name its input and output) into ENGINE (`ort`, `mnn`, `deepsparse`), writes the output for INPUT to
`INPUT.ENGINE.out.npy`, prints `ready`, then answers each line `N` on standard input with a
JSON list of N latencies in milliseconds (one inference each).

Each engine runs in its own virtualenv (the driver picks the interpreter); nothing here
imports dnnc."""
import json
import os
import sys
import time

import numpy as np


def ort_runner(model, threads, x, names):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x}
    return lambda: sess.run(None, feed)[0]


def mnn_runner(model, threads, x, names):
    import MNN.expr as F
    import MNN.nn as nn
    module = nn.load_module_from_file(model, [names[0]], [names[1]], thread_num=threads)
    var = F.placeholder(list(x.shape), F.NCHW)
    var.write(x)

    def run():
        y = module.forward(var)
        return np.array(y.read(), copy=True)
    return run


def deepsparse_runner(model, threads, x, names):
    from deepsparse import Engine
    engine = Engine(model=model, batch_size=x.shape[0], num_cores=threads)
    return lambda: engine.run([x])[0]


def main():
    engine, model, threads, inp = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    x = np.load(inp)
    make = {"ort": ort_runner, "mnn": mnn_runner, "deepsparse": deepsparse_runner}[engine]
    run = make(model, threads, x, sys.argv[5:7])
    np.save(f"{os.path.splitext(inp)[0]}.{engine}.out.npy", np.asarray(run(), np.float32))
    print("ready", flush=True)
    for line in sys.stdin:
        n = int(line)
        times = []
        for _ in range(n):
            t = time.perf_counter()
            run()
            times.append((time.perf_counter() - t) * 1e3)
        print(json.dumps(times), flush=True)


if __name__ == "__main__":
    main()
