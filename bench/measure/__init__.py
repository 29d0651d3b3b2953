"""Measuring one model: timers, memory probes, the two protocols, the environment, the scan micro-benchmark.

Everything here runs inside the measuring process (torch imported); nothing here starts processes or
writes files (bench/harness/ does both).
"""
