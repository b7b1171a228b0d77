"""Benchmarks: `make bench` (`python -m bench.run`) side by side with linuxptp.

- ``bench.run``: the suite driver (sections, progress, report files in bench/results/).
- ``bench.scenarios``: what each section measures, as data, and the functions that run it in a lab.
- ``bench.report``: statistics and the JSON / markdown report writer (pure, unit-tested).
- ``bench.dataplane`` / ``bench.unicast_load``: owned by the dataplane and unicast engineers; the
  suite calls them.
"""
