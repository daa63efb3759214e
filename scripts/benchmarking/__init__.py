"""Benchmark code the scripts share, kept out of the runtime package: `step_cost` (one nnU-Net
training step under a strategy or a schedule's phase, timed) and `segmentation_loss` (nnU-Net's
Dice + CE loss in plain torch, for machines without nnU-Net).

A script imports it as `benchmarking` with its own folder first on sys.path
(`sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))`), which also holds when the
script is run through runpy; the tests import it through tests/script_modules.py.
"""
