"""The harness: from a sweep config to recorded rows, one isolated child per model/device unit.

    config.py       the sweep file's keys (on bench/common/config_fields.py's validator)
    cases.py        Case, case_id, units and series;  expand.py: config -> checked cases
    plugins.py      plugin modules, model specs, extra-metric producers
    settings.py     RunSettings: how every case is measured;  budget.py: the session's time budget
    series_gate.py  skip the larger token counts of a series after an OOM / timeout
    resume.py       which cases of a run directory still need to run
    unit.py         measure one case / one unit in this process (the only place that measures)
    messages.py     typed child -> parent messages;  isolation.py: spawn and supervise the children
    completeness.py is every case of a run recorded, and why not
    executors/      where units run: local (isolation.py), submitit-local and slurm
"""
