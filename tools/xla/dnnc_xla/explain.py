"""ACCPAR's predicted communication per layer beside XLA's collectives, why they differ,
and the Markdown page `python -m dnnc_xla.table` writes."""

from __future__ import annotations

#: The JAX model runs in f32, whatever element type the plan was priced at.
F32 = 4
#: Relative difference within which predicted and inserted bytes count as equal.
SAME = 0.05


def predicted_per_device(layer: dict) -> dict:
    """Bytes (f32) one device receives for this layer under the plan, for the device that
    receives most: summed over the splits on its path, a split's elements spread over its
    `min(n₀, n₁)` links as ACCPAR prices them; split into the layer's own partial sums
    (`intra`) and the conversions of its input (`convert_fw`) and of its error
    (`convert_bw`) between the previous layers' partitions and its own."""
    best = {"intra": 0.0, "convert_fw": 0.0, "convert_bw": 0.0, "convert": 0.0, "total": 0.0}
    for device in sorted({d for s in layer["splits"] for d in s["devices"]}):
        got = {"intra": 0.0, "convert_fw": 0.0, "convert_bw": 0.0}
        for s in layer["splits"]:
            if device not in s["devices"]:
                continue
            side = 0 if device in s["groups"][0] else 1
            links = min(len(g) for g in s["groups"])
            e = s["elements"]
            got["intra"] += (e["intra"][0] + e["intra"][1]) / links * F32
            got["convert_fw"] += (e["forward"][side] - e["intra"][0]) / links * F32
            got["convert_bw"] += (e["backward"][side] - e["intra"][1]) / links * F32
        got["convert"] = got["convert_fw"] + got["convert_bw"]
        got["total"] = got["intra"] + got["convert"]
        if got["total"] > best["total"]:
            best = got
    return best


def inserted(report: dict, layer) -> dict:
    """Bytes one device receives in XLA's collectives for a layer (`None`: outside every
    layer): in the layer's own ops and in the ops leading into it, in the forward and the
    backward pass, and the collectives' kinds."""
    out = {"layer": 0.0, "into": 0.0, "forward": 0.0, "backward": 0.0, "kinds": {}, "ops": []}
    for c in report["collective_ops"]:
        if c["layer"] != layer:
            continue
        where = c["where"] or "layer"
        out[where] += c["received"]
        out["backward" if "transpose(" in c["op_name"] else "forward"] += c["received"]
        out["kinds"][(c["kind"], where)] = out["kinds"].get((c["kind"], where), 0) + 1
        out["ops"].append(c)
    out["total"] = out["layer"] + out["into"]
    return out


_SHORT = {"all-reduce": "AR", "all-gather": "AG", "reduce-scatter": "RS", "all-to-all": "A2A",
          "collective-permute": "CP"}


def _kinds(x: dict) -> str:
    parts = [f"{n}×{_SHORT[k]}{' before' if w == 'into' else ''}" for (k, w), n in sorted(x["kinds"].items())]
    return ", ".join(parts) or "none"


def _kib(b: float) -> str:
    return "0" if abs(b) < 1 else f"{b / 1024:.1f}"


def _types(layer: dict) -> str:
    """Per level, the type (or the nodes' types where they differ: `III/I`)."""
    by_level: dict[int, list[str]] = {}
    for s in layer["splits"]:
        by_level.setdefault(s["level"], []).append(s["type"])
    return " · ".join("/".join(t) if len(set(t)) > 1 else t[0] for _, t in sorted(by_level.items()))


def _differs(a: float, b: float) -> bool:
    return abs(a - b) > SAME * max(a, b, 1024.0)


def why(layer: dict, p: dict, x: dict, roundings: list[str], previous: list[str]) -> str:
    """The reasons, read from the plan and the HLO, that a layer's two figures differ
    (numbers refer to the notes of the page); `previous` holds the previous layer's
    roundings, which change what this layer converts."""
    if p["total"] == 0 and x["total"] == 0:
        return "nothing moves"
    reasons = []
    mixed = [r.split(": ", 1)[1] for r in roundings if "type" in r]
    if mixed:
        reasons.append("(1) " + "; ".join(mixed))
    if any("type" in r for r in previous) and p["convert"] + x["into"] > 0:
        reasons.append(f"(1) layer {layer['index'] - 1}'s mixed types changed what converts here")
    uneven = [r.split("share ", 1)[1].split(" ")[0] for r in roundings if "share" in r]
    if uneven and _differs(p["total"], x["total"]):
        reasons.append(f"(2) the split {uneven[0]} ran as ½/½")
    # Forward: the layer's partial sums of II, and the conversion of its input.
    fw_intra = sum(c["received"] for c in x["ops"] if c["kind"] == "all-reduce" and "transpose(" not in c["op_name"])
    fw_moved = x["forward"] - fw_intra
    gathered = [c for c in x["ops"] if c["kind"] == "all-gather" and "transpose(" not in c["op_name"]]
    if _differs(p["convert_fw"], fw_moved):
        if gathered and fw_moved > p["convert_fw"]:
            g = max(c["group"] for c in gathered)
            reasons.append(
                f"(3) input: XLA gathers it whole over {g} devices and slices ({_kib(fw_moved)} KiB), "
                f"ACCPAR moves what each level needs ({_kib(p['convert_fw'])})"
            )
        elif fw_moved > p["convert_fw"]:
            reasons.append(
                f"(4) input: ACCPAR prices {_kib(p['convert_fw'])} KiB, XLA moves {_kib(fw_moved)}: the "
                "lower levels cut different regions of the tensor"
            )
        else:
            reasons.append(f"(5) input: ACCPAR prices {_kib(p['convert_fw'])} KiB, XLA moves {_kib(fw_moved)}")
    bw_moved = x["backward"] - sum(
        c["received"] for c in x["ops"] if c["kind"] == "all-reduce" and "transpose(" in c["op_name"]
    )
    if _differs(p["convert_bw"], bw_moved):
        if bw_moved < p["convert_bw"]:
            reasons.append(f"(5) error: ACCPAR prices {_kib(p['convert_bw'])} KiB, XLA moves {_kib(bw_moved)}")
        else:
            reasons.append(
                f"(4) error: ACCPAR prices {_kib(p['convert_bw'])} KiB, XLA moves {_kib(bw_moved)}: the "
                "lower levels cut different regions of the tensor"
            )
    if not reasons:
        return "equal within 5%" if not _differs(p["total"], x["total"]) else "(6)"
    return "; ".join(reasons)


def layer_table(doc: dict, report: dict) -> list[str]:
    rows = [
        "| # | layer | type per level | predicted KiB/device: partial sums + conversions "
        "= total | XLA's collectives | XLA KiB/device: in the layer + before it = total | "
        "XLA ÷ predicted | why they differ |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for layer in doc["layers"]:
        p, x = predicted_per_device(layer), inserted(report, layer["index"])
        ratio = "—" if p["total"] == x["total"] == 0 else "∞" if p["total"] == 0 else f"{x['total'] / p['total']:.2f}"
        previous = doc["layers"][layer["index"] - 1]["name"] if layer["index"] else None
        reasons = why(
            layer, p, x, report["roundings"].get(layer["name"], []), report["roundings"].get(previous, [])
        )
        rows.append(
            f"| {layer['index']} | {layer['name']} | {_types(layer)} | {_kib(p['intra'])} + "
            f"{_kib(p['convert'])} = {_kib(p['total'])} | {_kinds(x)} | {_kib(x['layer'])} + "
            f"{_kib(x['into'])} = {_kib(x['total'])} | {ratio} | {reasons} |"
        )
    rest = inserted(report, None)
    if rest["total"] or rest["kinds"]:
        names = sorted({_op(c["op_name"]) for c in report["collective_ops"] if c["layer"] is None})
        rows.append(
            f"| — | outside the layers | — | 0 | {_kinds(rest)} | {_kib(rest['total'])} | ∞ | "
            f"the loss and the SGD update, which ACCPAR does not price: {', '.join(names)} |"
        )
    totals = [
        sum(predicted_per_device(layer)["total"] for layer in doc["layers"]),
        sum(c["received"] for c in report["collective_ops"]),
    ]
    rows.append(
        f"| | **total** | | {_kib(totals[0])} | {len(report['collective_ops'])} collectives | "
        f"{_kib(totals[1])} | {totals[1] / totals[0]:.2f} | |"
        if totals[0]
        else "| | **total** | | 0 | | | | |"
    )
    return rows


def _op(op_name: str) -> str:
    parts = [p for p in op_name.split("/") if p and not p.startswith("jit(")]
    return parts[-1] if parts else "?"


def document(settings, results: dict, flips: list, cpu: str) -> str:
    """The Markdown page: ACCPAR's plan per layer on each array, and every plan's step."""
    s = settings
    lines = [
        f"# {s.model} under ACCPAR on XLA: predicted and inserted communication",
        "",
        "Generated by `python -m dnnc_xla.table` (tools/xla/README.md says how to run it); "
        "edit the generator, not this page.",
        "",
        f"Model: `dnnc zoo {s.model} --image-size {s.image_size} --batch {s.batch}` with its "
        "weights materialised; one SGD training step (forward, backward, weight update) in "
        f"f32 on XLA's SPMD partitioner, devices simulated on the host ({cpu}). Plans: "
        f"`dnnc partition --batch {s.batch} --strategy S --emit-plan` on each array below.",
        "",
        "How the columns are counted:",
        "",
        "- **Predicted** is the plan's `elements` (docs/plan-schema.md) at 4 bytes per element "
        "(the model runs in f32 here, whatever element type the plan was priced at), for the "
        "device that receives most: summed over the splits on its path, each split's amount "
        "spread over the `min(n₀, n₁)` links ACCPAR prices it on. *Partial sums* are the "
        "layer's own exchange (type I: weight gradients; II: outputs; III: input errors); "
        "*conversions* move its input and its error between the previous layer's partition "
        "and its own.",
        "- **XLA** is every collective in the compiled, partitioned HLO, attributed by the "
        "named scope of the op it came from: `layerN` (the layer's convolution or matmul and "
        "its sharding constraints) or `intoN` (the ops between layer N−1 and layer N: relu, "
        "pooling, flatten, and their gradients). Bytes a device receives follow the "
        "bandwidth-optimal algorithm of each kind for a group of g devices and a result of "
        "S bytes: all-reduce 2(g−1)/g·S, all-gather and all-to-all (g−1)/g·S, reduce-scatter "
        "(g−1)·S, collective-permute S. This is the same quantity ACCPAR counts: for g = 2 "
        "an all-reduce receives the other side's partial sums, an all-gather its half.",
        "",
    ]
    lines += NOTES
    for array in s.arrays:
        for n in s.devices:
            doc, report = results[(array, n, "accpar")]
            lines += [f"## ACCPAR on `{array_name(array, n)}`, per layer", ""]
            lines += layer_table(doc, report)
            lines.append("")
    lines += [
        "## Step time of each plan",
        "",
        f"Median of {s.repeats} steps, wall clock, on {cpu}. The simulated devices share the "
        "host's cores, so a step measures XLA's partitioned program on one CPU, not the "
        "TPUs dnnc priced; the predicted TPU step is dnnc's, for the TPUs.",
        "",
        "| array | plan | step (ms) | unsharded step (ms) | collectives | XLA KiB/device | "
        "predicted KiB/device | predicted TPU step (ms) | loss rel. error | worst gradient "
        "rel. L2 vs unsharded f32 | vs f64: sharded | vs f64: unsharded |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (array, n, strategy), (doc, report) in results.items():
        ops = report["collective_ops"]
        xla = sum(c["received"] for c in ops)
        pred = sum(predicted_per_device(layer)["total"] for layer in doc["layers"])
        lines.append(
            f"| `{array_name(array, n)}` | {strategy} | {report['step_s'] * 1e3:.0f} | "
            f"{report['step_unsharded_s'] * 1e3:.0f} | {len(ops)} | {xla / 1024:.0f} | "
            f"{pred / 1024:.0f} | {doc['predicted_step_time_s'] * 1e3:.3f} | "
            f"{report['loss_relative_error']:.1e} | {report['max_gradient_relative_l2']:.1e} | "
            f"{report.get('max_gradient_relative_l2_vs_f64', float('nan')):.1e} | "
            f"{report.get('unsharded_max_gradient_relative_l2_vs_f64', float('nan')):.1e} |"
        )
    lines += [
        "",
        "The last two columns hold each f32 step against the same step in f64 (JAX with "
        "64-bit types). The gradient is discontinuous where a max-pool window's two largest "
        "values lie within rounding of each other: which one is the maximum decides where "
        "the window's gradient goes, and every earlier layer's gradient follows. Between "
        "the f32 and f64 forward passes of this input, the maximum moves in "
        + (", ".join(f"{moved} of {n:,}" for n, moved in flips) or "none")
        + " windows of the successive max-pools. Where a figure is about 1e-6 the two "
        "steps took the same maxima and differ by rounding alone; where it is about 1e-4 "
        "or more, a different summation order (another plan, or f64) tipped such a window "
        "the other way.",
        "",
    ]
    return "\n".join(lines) + "\n"


def array_name(template: str, n: int) -> str:
    """An array template with its device count filled in (`tpu-v3:N` → `tpu-v3:4`)."""
    return template.replace("N/2", str(n // 2)).replace("N", str(n))


#: Why predicted and inserted communication differ: the `why` column cites these.
NOTES = [
    "Why the figures differ (the *why* column cites these):",
    "",
    "1. **Mixed types at one level.** ACCPAR lets every node of a level choose its own type; "
    "a mesh axis shards a dimension the same way on every device, so each level runs the "
    "type that covers most devices (a tie goes to the first node) and the others change "
    "with it (dnnc_xla reports each such rounding).",
    "2. **Uneven shares.** On the heterogeneous array the top split gives the faster TPU-v3 "
    "group more of the split dimension (about 0.28/0.72); a mesh axis splits evenly, so XLA "
    "runs ½/½. The sub-layers below the top split, and with them the partial sums and "
    "conversions ACCPAR priced at the lower levels, change size. On one kind of device "
    "every share is even and the mesh expresses the plan exactly.",
    "3. **Gather, then slice.** Where a layer needs its input whole at one level and split "
    "by channels at the level below (type III above II), ACCPAR moves at each level only "
    "what that level lacks; XLA's partitioner all-gathers the tensor over all the devices "
    "and each keeps its channels, so it receives more.",
    "4. **Splits that cut different regions.** ACCPAR prices each level's conversion on "
    "that level's sub-layers as if the two layers' splits there cut the same tensor. When "
    "a split above already cut the two layers differently (one by batch or output "
    "channels, the other by input channels), the lower splits cut different regions, and a "
    "device must receive what the level's model counts as held (XLA's collective-permutes).",
    "5. **Less than priced.** ACCPAR prices a lower level's conversion on the later "
    "layer's sub-tensor, which can be larger than the region the earlier layer needs there "
    "(a type III above keeps the batch whole, while the earlier layer's type I above needs "
    "only half of it); XLA moves only that region.",
    "6. Not explained by 1–5: a difference to look into.",
    "",
    "Outside those, the figures agree: XLA's all-reduces carry the partial sums ACCPAR "
    "prices (type I's weight gradients, II's outputs, III's input errors), plus the bias "
    "gradients (a layer's output channels, which ACCPAR leaves out: the few per cent on "
    "the small first layer).",
    "",
]
