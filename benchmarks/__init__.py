"""The benchmark harness: `python -m benchmarks.run` (see run.py) measures each figure of ours beside its baseline.

harness: running and timing the measured processes; training, time_to_accuracy, startup, inference, serving: the
figure groups; report: the results JSON and BENCHMARKS.md; parsers: readers of the children's output. The
baselines, reference.py and raw_loop.py, are standalone scripts that the harness runs by path.
"""
