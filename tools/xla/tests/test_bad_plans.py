"""A bad plan is refused with the layer named, before anything runs."""

import json

import pytest

import dnnc_xla.run as runner
from conftest import plan_file
from dnnc_xla.plan import PlanError


@pytest.fixture
def good(model_file, workdir):
    model = model_file("lenet5")
    path = plan_file(workdir, model, "accpar", 4)
    return model, json.loads(path.read_text())


def refused(tmp_path, model, doc, monkeypatch):
    def never(*_, **__):
        raise AssertionError("a bad plan must not reach JAX")

    monkeypatch.setattr(runner, "build", never)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(PlanError) as e:
        runner.run(str(model), str(bad))
    return str(e.value)


def test_a_missing_layer(tmp_path, good, monkeypatch):
    model, doc = good
    doc["layers"].pop()
    message = refused(tmp_path, model, doc, monkeypatch)
    assert "the plan has 4 layers but @main has 5" in message


def test_an_unknown_type(tmp_path, good, monkeypatch):
    model, doc = good
    doc["layers"][2]["splits"][0]["type"] = "IV"
    message = refused(tmp_path, model, doc, monkeypatch)
    assert message.startswith("layer 2 (fc1): unknown partition type 'IV'"), message


def test_shares_that_do_not_sum_to_one(tmp_path, good, monkeypatch):
    model, doc = good
    doc["layers"][1]["splits"][1]["shares"] = [0.5, 0.6]
    message = refused(tmp_path, model, doc, monkeypatch)
    assert message.startswith("layer 1 (conv2), node '0': shares [0.5, 0.6] do not sum to 1"), message


def test_another_schema_version(tmp_path, good, monkeypatch):
    model, doc = good
    doc["version"] = 2
    assert "this reader takes version 1" in refused(tmp_path, model, doc, monkeypatch)
