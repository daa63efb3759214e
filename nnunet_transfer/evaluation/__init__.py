"""Evaluation: per-case metrics (DSC, IoU, HD95, ASSD, lesion F1), folder evaluation, comparison
tables with paired tests, and generalisation to an unseen test set.

Import the modules directly (`nnunet_transfer.evaluation.metrics`, `.evaluate`, `.stats`,
`.generalize`); surface distances import MONAI on first use only.
"""
