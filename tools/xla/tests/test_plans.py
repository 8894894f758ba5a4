"""ACCPAR's plans (and the DP, OWT and HyPar baselines) run on XLA's SPMD partitioner:
the loss, every gradient and the updated weights equal the unsharded step."""

import pytest

from conftest import plan_file
from dnnc_xla.run import run

TOLERANCE = 1e-5


@pytest.mark.parametrize("devices", [4, 8])
@pytest.mark.parametrize("strategy", ["dp", "owt", "hypar", "accpar"])
@pytest.mark.parametrize("model", ["lenet5", "resnet18", "vgg11"])
def test_the_sharded_step_equals_the_unsharded_one(model_file, workdir, model, strategy, devices):
    path = model_file(model)
    report = run(str(path), str(plan_file(workdir, path, strategy, devices)), repeats=1)
    assert report["devices"] == devices
    assert report["loss_relative_error"] <= TOLERANCE, report
    assert report["max_gradient_relative_l2"] <= TOLERANCE, report
    assert report["max_update_relative_l2"] <= TOLERANCE, report
    if strategy == "dp":
        # Data parallelism splits only the batch: XLA sums weight gradients, nothing else.
        assert all(set(t) == {"I"} for t in report["types"].values())
        kinds = {k for layer in report["collectives"].values() for k in layer}
        assert kinds <= {"all-reduce"}, report["collectives"]
    else:
        assert report["collectives"], "a partitioned step moves data"
