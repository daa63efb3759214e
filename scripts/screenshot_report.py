"""Render an HTML report in headless Chromium, save a screenshot and check the page is not blank.

Usage: python scripts/screenshot_report.py REPORT.html OUT.png [--width 1280] [--height 2000]
                                           [--chromium PATH] [--timeout 120]

The page is opened from its file:// URL by the system's Chromium (`chromium`,
`chromium-browser`, `google-chrome`, ... on PATH, or --chromium / $CHROMIUM) in headless mode
with a fresh throw-away profile; nothing is downloaded. The screenshot is the top W x H pixels
of the page. The check reads it with Pillow: the page counts as rendered when at least
MIN_INK (0.2%) of its pixels are not near-white and their grey levels are not all one value
(an empty page, a page whose content failed to lay out, or a crashed renderer's uniform image
fails).

Exit status: 0 rendered; 2 no Chromium (Debian: `apt-get install chromium`); 3 Chromium failed
or wrote no image; 4 blank page; 1 bad arguments (e.g. no report).
The last line printed says what was found.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable",
                  "chrome", "headless_shell", "chrome-headless-shell")
INSTALL_HINT = ("install it (Debian: `apt-get install chromium`) or give its path with "
                "--chromium or $CHROMIUM")
NEAR_WHITE = 235     # a grey level below this is ink
MIN_INK = 0.002      # fraction of ink pixels below which the page counts as blank


class ScreenshotError(Exception):
    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def find_chromium(explicit: str | None = None) -> str | None:
    """The Chromium binary to use: `explicit`, $CHROMIUM, else the first of CHROMIUM_NAMES on
    PATH; None if there is none."""
    for candidate in (explicit, os.environ.get("CHROMIUM")):
        if candidate:
            return shutil.which(candidate) or (candidate if os.path.isfile(candidate) else None)
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def take_screenshot(html_path: str, png_path: str, width: int = 1280, height: int = 2000,
                    chromium: str | None = None, timeout: float = 120) -> None:
    """Write the top width x height pixels of the rendered page to png_path."""
    if not os.path.isfile(html_path):
        raise ScreenshotError(f"no report at {html_path}", 1)
    binary = find_chromium(chromium)
    if binary is None:
        raise ScreenshotError(f"Chromium not found; {INSTALL_HINT}", 2)
    png_path = os.path.abspath(png_path)
    os.makedirs(os.path.dirname(png_path), exist_ok=True)
    if os.path.exists(png_path):
        os.remove(png_path)   # so that a stale image is never taken for a new one
    with tempfile.TemporaryDirectory(prefix="report-chromium-") as profile:
        command = [binary, "--headless", "--disable-gpu", "--no-sandbox",
                   # a container's small /dev/shm crashes the renderer otherwise
                   "--disable-dev-shm-usage", "--hide-scrollbars", "--no-first-run",
                   "--no-default-browser-check", "--disable-extensions", "--mute-audio",
                   f"--user-data-dir={profile}", f"--window-size={width},{height}",
                   f"--screenshot={png_path}", pathlib.Path(html_path).resolve().as_uri()]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                    env={**os.environ, "HOME": profile})
        except subprocess.TimeoutExpired:
            raise ScreenshotError(f"Chromium did not finish within {timeout:g} s", 3) from None
        except OSError as error:
            raise ScreenshotError(f"cannot run {binary}: {error}", 3) from None
    if result.returncode != 0 or not os.path.isfile(png_path) or not os.path.getsize(png_path):
        tail = "\n".join((result.stderr or "").strip().splitlines()[-15:])
        raise ScreenshotError(f"Chromium ({binary}) exited with {result.returncode} and wrote "
                              f"no screenshot; its last messages:\n{tail}", 3)


def ink_statistics(png_path: str) -> dict:
    """Fraction of near-white pixels' complement ("ink"), grey-level std and image size."""
    try:
        from PIL import Image, ImageStat
    except ImportError:
        raise ScreenshotError("the check needs Pillow (pip install pillow)", 1) from None
    with Image.open(png_path) as image:
        grey = image.convert("L")
        histogram = grey.histogram()
        total = grey.width * grey.height
        return {"width": grey.width, "height": grey.height,
                "ink": sum(histogram[:NEAR_WHITE]) / total,
                "std": ImageStat.Stat(grey).stddev[0]}


def check_not_blank(png_path: str) -> dict:
    stats = ink_statistics(png_path)
    if stats["ink"] < MIN_INK or stats["std"] < 1.0:
        raise ScreenshotError(
            f"the page looks blank: {stats['ink']:.3%} of the {stats['width']}x"
            f"{stats['height']} pixels are not white (at least {MIN_INK:.1%} needed), grey "
            f"std {stats['std']:.2f}; screenshot {png_path}", 4)
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", help="the HTML file")
    parser.add_argument("out", help="the PNG to write")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2000)
    parser.add_argument("--chromium", help="Chromium binary (default: $CHROMIUM, then PATH)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds (120)")
    args = parser.parse_args(argv)
    if args.width < 100 or args.height < 100:
        parser.error("--width and --height must be at least 100 pixels")
    try:
        take_screenshot(args.report, args.out, args.width, args.height, args.chromium,
                        args.timeout)
        stats = check_not_blank(args.out)
    except ScreenshotError as error:
        print(f"screenshot_report: {error}", file=sys.stderr)
        return error.status
    print(f"screenshot_report: {args.out}: {stats['width']}x{stats['height']}, "
          f"{stats['ink']:.1%} of the pixels not white, grey std {stats['std']:.1f}: rendered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
