"""Simulated host devices for XLA (before JAX is imported), and dnnc-made models and plans."""

import os
import pathlib
import subprocess

# Eight simulated devices; XLA's cheaper CPU code generation (the steps are tiny, the
# compiles of resnet18's sharded backward pass are what take the time).
os.environ.setdefault(
    "XLA_FLAGS",
    "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0 "
    "--xla_llvm_disable_expensive_passes=true",
)

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[3]


def dnnc_binary() -> str:
    for candidate in [os.environ.get("DNNC"), REPO / "target/debug/dnnc", REPO / "target/release/dnnc"]:
        if candidate and pathlib.Path(candidate).exists():
            return str(candidate)
    pytest.fail("no dnnc binary: build it (cargo build) or set DNNC")


def dnnc(*args: str) -> None:
    out = subprocess.run([dnnc_binary(), *args], capture_output=True, text=True)
    assert out.returncode == 0, f"dnnc {' '.join(args)} failed:\n{out.stderr}"


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("xla")


MODELS = {"lenet5": [], "resnet18": ["--image-size", "32"], "vgg11": ["--image-size", "32"]}
BATCH = 16


@pytest.fixture(scope="session")
def model_file(workdir):
    """`model_file(name)`: the zoo model at batch 16 with its weights materialised."""
    made = {}

    def make(name):
        if name not in made:
            raw, out = workdir / f"{name}-init.dnn", workdir / f"{name}.dnn"
            dnnc("zoo", name, "--batch", str(BATCH), *MODELS[name], "-o", str(raw))
            dnnc("opt", str(raw), "--materialize-weights", "-o", str(out))
            made[name] = out
        return made[name]

    return make


def plan_file(workdir, model, strategy, devices, array=None):
    """dnnc's plan for `model` under `strategy` on `devices` (half TPU-v2, half TPU-v3
    unless `array` names the devices)."""
    half = devices // 2
    array = array or f"tpu-v2:{half},tpu-v3:{half}"
    path = workdir / f"{model.stem}-{strategy}-{array.replace(':', '').replace(',', '-')}.json"
    dnnc(
        "partition", str(model), "--devices", array,
        "--batch", str(BATCH), "--strategy", strategy, "--emit-plan", str(path),
    )
    return path
