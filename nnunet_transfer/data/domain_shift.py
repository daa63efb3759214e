"""A "low-quality site" copy of a dataset: lower contrast, blur, a bias field and noise, seeded.

For controlled transfer experiments on one dataset: the copy has the same cases, case ids and
labels (copied unchanged), only the images differ, by the same four knobs as the synthetic
domains (synthetic.Domain):

- contrast c: intensities are pulled towards the image's mean, x -> mean + c (x - mean), so every
  tissue difference shrinks by c. nnU-Net z-scores MRI per image, which undoes a contrast change
  on its own; it takes effect relative to the noise and bias, which stay in units of the
  original image (the contrast-to-noise ratio falls by c), as in the synthetic domains where
  the noise is absolute;
- blur_sigma: Gaussian blur, in voxels (a lower effective resolution on the same grid);
- bias: amplitude of a smooth multiplicative field (1 + bias * f, |f| <= 1), as MRI coils give;
- noise: standard deviation of added Gaussian noise, in units of the image's standard deviation.

Every case draws from its own generator seeded by (seed, case id), so a case looks the same
whichever other cases are converted with it, and re-runs redo only what changed.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict

import numpy as np
import SimpleITK as sitk

from nnunet_transfer.data.convert import ConversionReport, ConversionSettings, LoadedCase, \
    convert_cases
from nnunet_transfer.data.raw_dataset import name_of
from nnunet_transfer.data.sources import SourceCase, find_raw_dataset_cases
from nnunet_transfer.data.synthetic import LOW_QUALITY_DOMAIN, Domain, acquisition_shift
from nnunet_transfer.errors import UserError
from nnunet_transfer.value_rules import NON_NEGATIVE_NUMBER, NotAllowed


def degrade_volume(image: np.ndarray, domain: Domain, rng: np.random.Generator) -> np.ndarray:
    """A real image (any shape, any intensity unit) as a low-quality site would see it
    (float32); see the module docstring for the units."""
    values = image.astype(np.float64)
    mean, std = values.mean(), values.std()
    values = mean + domain.contrast * (values - mean)
    return acquisition_shift(values, domain, rng, noise_scale=std).astype(np.float32)


def case_rng(seed: int, case: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(case.encode())])


OPTIONS = {"contrast": "--contrast", "noise": "--noise", "blur_sigma": "--blur", "bias": "--bias"}


def check_domain(domain: Domain) -> None:
    for name, value in asdict(domain).items():
        try:
            NON_NEGATIVE_NUMBER.check(value)
        except NotAllowed as refusal:
            raise UserError(f"{OPTIONS[name]} {refusal}") from None
    if domain.contrast == 0:
        raise UserError("--contrast 0 would erase the image; give a factor above 0 (e.g. 0.6)")


def degrade_dataset(source_folder: str, out_folder: str, domain: Domain = LOW_QUALITY_DOMAIN,
                    seed: int = 0, site: str | None = None) -> ConversionReport:
    """Write a degraded copy of the raw dataset in `source_folder` (its training cases) into
    `out_folder`. Every case gets `site` in sites.json (default: the new dataset's name)."""
    check_domain(domain)
    found, dataset_json, _ = find_raw_dataset_cases(source_folder)
    name = name_of(out_folder)
    for case in found.cases:
        case.site = site or name
    settings = ConversionSettings.from_dataset_json(dataset_json)

    def degrade(case: SourceCase, loaded: LoadedCase) -> LoadedCase:
        rng = case_rng(seed, case.case)
        for index, channel in enumerate(loaded.channels):
            degraded = sitk.GetImageFromArray(degrade_volume(sitk.GetArrayViewFromImage(channel),
                                                             domain, rng))
            degraded.CopyInformation(channel)
            loaded.channels[index], loaded.channel_files[index] = degraded, None
        return loaded

    shift = {**asdict(domain), "seed": seed}
    return convert_cases(
        found, out_folder, settings, name, source_folder, transform=degrade,
        transform_settings=shift,
        description=f"{dataset_json.get('name', source_folder)} as a low-quality site "
                    f"({', '.join(f'{k} {v:g}' for k, v in shift.items())}), by nnunet-transfer",
        nnunet_transfer={"derived_from": source_folder, "domain_shift": shift})
