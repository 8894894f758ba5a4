"""The same step on 2 processes × 2 simulated devices over loopback (jax.distributed)."""

import json
import os
import socket
import subprocess
import sys

from conftest import plan_file

TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_of_two_devices_run_the_plan_like_one_device(model_file, workdir):
    model = model_file("vgg11")
    plan = plan_file(workdir, model, "accpar", 4)
    port = free_port()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "dnnc_xla.distributed", "--process-id", str(i),
             "--processes", "2", "--port", str(port), str(model), str(plan)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for i in range(2)
    ]
    reports = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=TIMEOUT_S)
            assert p.returncode == 0, err[-4000:]
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert sorted(r["process_id"] for r in reports) == [0, 1]
    for r in reports:
        assert (r["global_devices"], r["local_devices"]) == (4, 2)
        assert r["loss_relative_error"] <= 1e-5, r
        assert r["max_gradient_relative_l2"] <= 1e-5, r
        assert r["max_update_relative_l2"] <= 1e-5, r
