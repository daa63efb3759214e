"""Reading image and label volumes from the files users have: NIfTI, NRRD, MHA (SimpleITK), HDF5.

Everything comes back as SimpleITK images, so that the geometry (spacing in mm, origin in mm,
direction cosines) travels with the voxels. Arrays taken from them are (z, y, x), SimpleITK's
numpy order; sizes and spacings reported by SimpleITK are (x, y, z).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

# Longest first, so that ".nii.gz" wins over ".gz"-less ".nii" when a name is split.
SITK_ENDINGS = (".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".nii")
HDF5_ENDINGS = (".hdf5", ".h5", ".hdf")
VOLUME_ENDINGS = SITK_ENDINGS + HDF5_ENDINGS


class VolumeError(ValueError):
    """A file that cannot be read as the volume it should be; the message says why."""


@dataclass(frozen=True)
class Hdf5Layout:
    """Where a case's arrays sit in an HDF5 file, and their spacing (HDF5 has no standard one).

    `spacing` is in mm, one value per array axis in storage order (axis 0 first); an image
    array is (z, y, x) or (channels, z, y, x), a label array (z, y, x).
    """
    image_key: str = "image"
    label_key: str = "label"
    spacing: tuple[float, float, float] | None = None


def file_ending(path: str) -> str | None:
    """The volume file ending of `path` (".nii.gz", ".h5", ...), or None for another file."""
    lower = path.lower()
    return next((e for e in VOLUME_ENDINGS if lower.endswith(e)), None)


def strip_ending(name: str) -> str:
    ending = file_ending(name)
    return name[:-len(ending)] if ending else name


def is_hdf5(path: str) -> bool:
    return file_ending(path) in HDF5_ENDINGS


def read_volume(path: str, key_role: str = "image", hdf5: Hdf5Layout | None = None) -> sitk.Image:
    """Read one volume. `key_role` ("image" or "label") picks the HDF5 dataset of that role."""
    if not os.path.isfile(path):
        raise VolumeError("file not found")
    if is_hdf5(path):
        return _read_hdf5(path, key_role, hdf5 or Hdf5Layout())
    if file_ending(path) is None:
        raise VolumeError(f"unknown file type; use one of {', '.join(VOLUME_ENDINGS)}")
    try:
        return sitk.ReadImage(path)
    except RuntimeError as error:
        raise VolumeError(f"cannot read it ({_first_itk_line(error)})") from None


def read_header(path: str) -> str:
    """A short description of a volume's grid from its header alone, e.g.
    "512x512x94 voxels of 0.734x0.734x5 mm"; empty when the header cannot be read."""
    if is_hdf5(path):
        return ""
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(path)
        reader.ReadImageInformation()
    except RuntimeError:
        return ""
    return describe_grid(reader.GetSize(), reader.GetSpacing())


def describe_grid(size, spacing) -> str:
    return (f"{'x'.join(str(s) for s in size)} voxels of "
            f"{'x'.join(f'{s:.4g}' for s in spacing)} mm")


def split_channels(image: sitk.Image) -> list[sitk.Image]:
    """The 3D channels of an image: itself, the volumes of a 4D image (MSD stores multi-modal
    cases so, channel last in SimpleITK's order) or the components of a vector image."""
    if image.GetNumberOfComponentsPerPixel() > 1:
        if image.GetDimension() != 3:
            raise VolumeError(f"{image.GetDimension()}D vector image; 3D volumes expected")
        return [sitk.VectorIndexSelectionCast(image, i)
                for i in range(image.GetNumberOfComponentsPerPixel())]
    if image.GetDimension() == 3:
        return [image]
    if image.GetDimension() == 4:
        # Slicing keeps the spatial part of spacing, origin and direction.
        return [image[:, :, :, t] for t in range(image.GetSize()[3])]
    raise VolumeError(f"{image.GetDimension()}D image; 3D volumes (or 4D stacks of channels) "
                      "expected")


def _read_hdf5(path: str, key_role: str, layout: Hdf5Layout) -> sitk.Image:
    import h5py
    key = layout.image_key if key_role == "image" else layout.label_key
    try:
        with h5py.File(path, "r") as f:
            if key not in f or not isinstance(f[key], h5py.Dataset):
                keys = []
                f.visititems(lambda name, item: keys.append(name)
                             if isinstance(item, h5py.Dataset) else None)
                raise VolumeError(f"has no dataset {key!r} for the {key_role}; it holds "
                                  f"{', '.join(keys) or 'no datasets'} (set the HDF5 "
                                  f"{key_role} key)")
            array = np.asarray(f[key][()])
    except OSError as error:
        raise VolumeError(f"cannot read it as HDF5 ({error})") from None
    if layout.spacing is None:
        raise VolumeError("HDF5 files carry no standard spacing; give the spacing of the "
                          "array axes in mm (--h5-spacing)")
    allowed_dims = (3,) if key_role == "label" else (3, 4)
    if array.ndim not in allowed_dims:
        expected = "(z, y, x)" if key_role == "label" else "(z, y, x) or (channels, z, y, x)"
        raise VolumeError(f"dataset {key!r} has shape {array.shape}; {expected} expected")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    image = sitk.GetImageFromArray(array, isVector=False)
    spacing = tuple(float(s) for s in reversed(layout.spacing))  # SimpleITK takes (x, y, z)
    image.SetSpacing(spacing + (1.0,) * (image.GetDimension() - 3))
    return image


def _first_itk_line(error: Exception) -> str:
    """ITK's messages carry the C++ source location first; keep the line that says what."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    meaningful = [line for line in lines if "ERROR" in line or "error" in line]
    return (meaningful or lines or ["unknown error"])[-1][:300]
