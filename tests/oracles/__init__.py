"""Test oracles: second, plainly written implementations that the package's fast ones are
checked against (tests) and timed against (scripts/benchmark_evaluation.py,
scripts/benchmark_pwcca.py). No command of the package uses them.

- `evaluation_reference`: the evaluation metrics on full volumes with scipy, no MONAI.
- `svcca_reference`: google/svcca's PWCCA in one shot, against the streaming `analysis.pwcca`.
- `logme_reference`: LogME as a Gaussian density maximised by scipy, against the closed form
  of `source_ranking.logme`.
"""
