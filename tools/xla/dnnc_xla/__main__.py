"""`python -m dnnc_xla MODEL.dnn PLAN.json`: run one training step under the plan."""

import argparse
import json
import sys

from .dnn import DnnError
from .plan import PlanError


def main() -> int:
    p = argparse.ArgumentParser(prog="dnnc_xla", description=__doc__)
    p.add_argument("model", help="a printed .dnn module with materialised weights")
    p.add_argument("plan", help="a plan from `dnnc partition --emit-plan`")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    try:
        from .run import run

        report = run(a.model, a.plan, a.seed)
    except (DnnError, PlanError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    json.dump(report, sys.stdout, indent=2, default=str)
    print()
    return 0


sys.exit(main())
