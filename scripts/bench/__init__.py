"""Benchmarks of mechjax against TransformerLens, nnsight, pyvene, penzai and HF transformers.

Run the package: `python scripts/bench --help`. `common` holds the workloads and inputs,
`libs_*` one library family each, `worker` one measurement per subprocess, `orchestrate`
the subprocesses and output comparison, `report` the table and plot, `cli` the options.
"""
