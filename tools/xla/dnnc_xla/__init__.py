"""Run dnnc's ACCPAR partition plans on XLA's SPMD partitioner through JAX.

The model comes from dnnc's own printed IR (`dnnc opt --materialize-weights -o m.dnn` writes
it with its weights in `m.safetensors`), the plan from `dnnc partition --emit-plan`
(docs/plan-schema.md). See tools/xla/README.md.
"""
