"""Where a sweep's units run: `local` (this process spawns one child per unit, bench/harness/isolation.py),
`submitit-local` and `slurm` (one submitit job per unit, bench/harness/executors/submitit.py).

Executors know nothing of measuring (bench/harness/unit.py does that, wherever it runs); options
are checked in bench/harness/executors/options.py before anything starts.
"""
