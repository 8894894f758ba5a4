"""`python -m dnnc_xla.distributed --process-id I --processes N --port P MODEL PLAN`: one
process of a multi-process run over loopback (jax.distributed, coordinator on 127.0.0.1);
each process contributes its local (simulated) devices to the plan's mesh."""

import argparse
import json
import sys


def main() -> int:
    p = argparse.ArgumentParser(prog="dnnc_xla.distributed", description=__doc__)
    p.add_argument("model")
    p.add_argument("plan")
    p.add_argument("--process-id", type=int, required=True)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args()
    import jax

    # CPU devices of different processes talk through gloo over TCP.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{a.port}",
        num_processes=a.processes,
        process_id=a.process_id,
        initialization_timeout=120,
    )
    from .run import run

    report = run(a.model, a.plan, repeats=1)
    report["process_id"] = jax.process_index()
    report["global_devices"] = jax.device_count()
    report["local_devices"] = jax.local_device_count()
    json.dump(report, sys.stdout, default=str)
    print()
    jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
