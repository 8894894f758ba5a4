"""What every section shares: paths, the dnnc driver, models as .dnn + .safetensors files,
accuracy through `dnnc eval`, and Markdown tables."""
import json
import os
import re
import subprocess

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WORK = os.path.join(ROOT, "target", "results")
DOCS = os.path.join(ROOT, "docs")
FIGURES = os.path.join(DOCS, "results")
DNNC = os.path.abspath(os.environ.get("DNNC") or os.path.join(ROOT, "target", "release", "dnnc"))


def dnnc(*args, check=True):
    """Runs the driver; its standard output (raises with its standard error on failure)."""
    r = subprocess.run([DNNC, *map(str, args)], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"dnnc {' '.join(map(str, args))} failed:\n{r.stderr}")
    return r.stdout


def dnnc_json(*args):
    return json.loads(dnnc(*args))


def work(*parts):
    path = os.path.join(WORK, *parts)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def save_weights(params, path):
    from safetensors.numpy import save_file
    import numpy as np
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in params.items()}, path)


def load_weights(path):
    from safetensors.numpy import load_file
    return dict(load_file(path))


def sidecar(dnn_path):
    return os.path.splitext(dnn_path)[0] + ".safetensors"


def trained_model(zoo_name, params, out):
    """The zoo model's text with every weight read from `out`'s sidecar (`params` written
    there): `dnn.weight @w : T = #init<...>` becomes `= file<"out.safetensors", key = "w">`."""
    text = open(os.path.join(ROOT, "models", f"{zoo_name}.dnn")).read()
    side = os.path.basename(sidecar(out))

    def repl(m):
        return f'{m.group(1)} = file<"{side}", key = "{m.group(2)}">'

    text = re.sub(r'(dnn\.weight @([\w.]+) : [^\n]*?) = #init<[^>]*>', repl, text)
    save_weights(params, sidecar(out))
    with open(out, "w") as f:
        f.write(text)
    return out


WEIGHT_FILE = re.compile(r'dnn\.weight @([\w.]+) : [^\n]*? = file<"([^"]+)"(?:, key = "([^"]+)")?>')


def read_weights(dnn_path):
    """Every weight a .dnn file reads from `.safetensors` files, by name."""
    base = os.path.dirname(os.path.abspath(dnn_path))
    files, out = {}, {}
    for name, path, key in WEIGHT_FILE.findall(open(dnn_path).read()):
        full = os.path.normpath(os.path.join(base, path))
        if full not in files:
            files[full] = load_weights(full)
        out[name] = files[full][key or name]
    return out


def with_weights(dnn_path, params, out):
    """A copy of `dnn_path` in which the weights named in `params` are read from `out`'s
    sidecar (written with them); the other weights keep their files."""
    side = os.path.basename(sidecar(out))
    src_dir, out_dir = os.path.dirname(os.path.abspath(dnn_path)), os.path.dirname(os.path.abspath(out))

    def repl(m):
        name, path, key = m.group(1), m.group(2), m.group(3)
        head = m.group(0).split(" = file<")[0]
        if name in params:
            return f'{head} = file<"{side}", key = "{name}">'
        moved = os.path.relpath(os.path.join(src_dir, path), out_dir)
        return f'{head} = file<"{moved}", key = "{key or name}">'

    save_weights(params, sidecar(out))
    with open(out, "w") as f:
        f.write(WEIGHT_FILE.sub(repl, open(dnn_path).read()))
    return out


def eval_accuracy(dnn_path, split_files):
    """Top-1 accuracy of a model through `dnnc eval` (the JIT) on (X.npy, y.npy)."""
    x, y = split_files
    return dnnc_json("eval", dnn_path, "--data", x, "--labels", y, "--json")["top1"]


def save_split(name, split):
    """Writes (x, y) as `name.x.npy`, `name.y.npy`; returns their paths."""
    import numpy as np
    x, y = split
    px, py = work("data", f"{name}.x.npy"), work("data", f"{name}.y.npy")
    np.save(px, x.astype(np.float32))
    np.save(py, y.astype(np.int32))
    return px, py


def table(header, rows, align=None):
    """A Markdown table; numbers are formatted by the caller."""
    align = align or ["---"] * len(header)
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def machine():
    """The CPU model and the vector level dnnc uses."""
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    level = dnnc_json("info", "--target", "--json").get("level", "?")
    return cpu, level
