"""Datasets: from the files users have to nnU-Net raw datasets and the folds of a transfer study.

Reading and checking volumes:
- volumes: NIfTI, NRRD, MHA and HDF5 files read as SimpleITK images, channels split;
- geometry: whether two volumes share a voxel grid, within a tolerance in voxels;
- labels: label sets, whole-number labels, remapping to another label set.
nnU-Net raw datasets:
- raw_dataset: their layout, naming and finding them, reading dataset.json and sites.json;
- raw_dataset_writer: writing one case by case, atomically, redoing only what changed.
Making one:
- sources: finding a source's cases (path templates in a folder, a CSV, a raw dataset);
- msd: Medical Segmentation Decathlon task folders, found and converted;
- convert: checking the found cases and writing them, with a report of what was wrong;
- pooling: one dataset pooled from several, labels mapped to a common set;
- domain_shift: a low-quality-site copy of a dataset (contrast, blur, bias field, noise);
- synthetic: synthetic source / target datasets for tests and the demo.
Using one:
- splits: few-shot and cross-site folds in nnU-Net's splits_final.json.
- commands: the data subcommands of `nnunet-transfer` (convert-msd, convert, pool, degrade,
  splits).
"""
