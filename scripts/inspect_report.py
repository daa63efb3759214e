"""Look at an HTML report in headless Chromium: measure it and take screenshots of its top and
of each section.

Usage: python scripts/inspect_report.py REPORT.html OUT_FOLDER [--width 1400] [--height 900]

Chromium (Debian's `chromium`, or --chromium / $CHROMIUM) is driven through its DevTools
protocol over a pipe (--remote-debugging-pipe: no port, no websocket, nothing to install). The
page itself stays script-free: the measurements are evaluated by the protocol, not by the page.
Writes OUT_FOLDER/top.png (the first screen), OUT_FOLDER/section-<id>.png (the first screen of
each top-level section) and OUT_FOLDER/measurements.json:

- `text_length`: characters of visible text (0: a blank page);
- `images`, `images_without_alt`: <img> elements, and those with an empty or missing alt;
- `broken_images`: images that did not decode;
- `too_wide`: elements whose right edge lies beyond the page width, outside a scrolling box
  (tag, id, class, right edge), and `page_width`, `scroll_width` of the document;
- `sections`: id, title and top of each top-level section;
- `first_figure`: top and bottom of the first figure's image (pixels from the top);
- `figures`: each figure image shown (not folded away): its figure's id, its size as drawn
  and its own size in pixels; `folded_figures`: the figure images inside closed <details>;
- `page_height`: the whole page's height in pixels at this width.

`layout_problems(found)` says what a reader would trip over: a figure drawn wider or taller
than MAX_ASPECT:1, a page taller than MAX_PAGE_HEIGHT.

Exit status: 0 measured; 2 no Chromium; 3 Chromium failed.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
MAX_ASPECT = 3.0             # a figure wider (or taller) than this reads as a strip
MAX_PAGE_HEIGHT = 10_000     # pixels at 1400 px: what a reader scrolls through at a glance

MEASURE = r"""
(() => {
  const width = document.documentElement.clientWidth;
  const scrolls = (el) => {
    for (let p = el.parentElement; p; p = p.parentElement) {
      const o = getComputedStyle(p).overflowX;
      if (o === 'auto' || o === 'scroll' || o === 'hidden') return true;
    }
    return false;
  };
  // (a closed <details> keeps boxes for its content in recent Chromium, hidden from view by
  // content-visibility: checkVisibility says so)
  const hidden = (el) => el.getClientRects().length === 0 ||
    (el.checkVisibility ? !el.checkVisibility() : !!el.closest('details:not([open])'));
  const tooWide = [];
  for (const el of document.body.querySelectorAll('*')) {
    if (hidden(el)) continue;
    const r = el.getBoundingClientRect();
    if (r.right > width + 1 && !scrolls(el)) {
      tooWide.push({tag: el.tagName, id: el.id, cls: el.className, right: r.right});
    }
  }
  const images = [...document.images];
  const sections = [...document.querySelectorAll('main > section')].map(s => ({
    id: s.id, title: s.querySelector('h2') ? s.querySelector('h2').innerText : '',
    top: s.getBoundingClientRect().top + window.scrollY}));
  const shown = (img) => {
    const r = img.getBoundingClientRect();
    return {id: img.closest('figure') ? img.closest('figure').id : '', width: r.width,
            height: r.height, natural_width: img.naturalWidth,
            natural_height: img.naturalHeight};
  };
  const figureImages = [...document.querySelectorAll('figure img')];
  const first = document.querySelector('figure img');
  const fr = first ? first.getBoundingClientRect() : null;
  return {
    page_width: width, scroll_width: document.documentElement.scrollWidth,
    page_height: document.documentElement.scrollHeight,
    text_length: document.body.innerText.trim().length,
    images: images.length,
    images_without_alt: images.filter(i => !(i.getAttribute('alt') || '').trim()).length,
    broken_images: images.filter(i => !i.complete || i.naturalWidth === 0).length,
    too_wide: tooWide.slice(0, 20), sections,
    first_figure: fr ? {top: fr.top + window.scrollY, bottom: fr.bottom + window.scrollY}
                     : null,
    scripts: document.scripts.length,
    figures: figureImages.filter(i => !hidden(i)).map(shown),
    folded_figures: figureImages.filter(hidden).length,
  };
})()
"""


class Browser:
    """One headless Chromium and one page, spoken to over the DevTools pipe (fds 3 and 4)."""

    def __init__(self, binary: str, profile: str, width: int, height: int):
        to_child_r, self._write = os.pipe()
        self._read, from_child_w = os.pipe()
        command = [binary, "--headless", "--disable-gpu", "--no-sandbox",
                   "--disable-dev-shm-usage", "--hide-scrollbars", "--no-first-run",
                   "--no-default-browser-check", "--disable-extensions", "--mute-audio",
                   f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"]

        # out of the way of 3 and 4 first, so that placing one cannot overwrite the other
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_child_r, from_child_w)]

        def wire():   # the protocol's fds in the child: 3 = commands in, 4 = replies out
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.process = subprocess.Popen(command, pass_fds=(3, 4), preexec_fn=wire,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        env={**os.environ, "HOME": profile})
        for fd in (to_child_r, from_child_w, *high):
            os.close(fd)
        self._buffer = b""
        self._id = 0
        self.events: list[dict] = []
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"],
                                 flatten=True)["sessionId"]
        self.call("Page.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width,
                  height=height, deviceScaleFactor=1, mobile=False)

    def _message(self) -> dict:
        while b"\0" not in self._buffer:
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: bool = False, **params) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._message()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, event: str, timeout: float) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if any(e.get("method") == event for e in self.events):
                return
            self.events.append(self._message())
        raise RuntimeError(f"no {event} within {timeout:g} s")

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", session=True, expression=expression,
                           returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"evaluation failed: {result['exceptionDetails']}")
        return result["result"]["value"]

    def screenshot(self, path: str, top: float, width: int, height: int) -> None:
        data = self.call("Page.captureScreenshot", session=True, format="png",
                         captureBeyondViewport=True,
                         clip={"x": 0, "y": top, "width": width, "height": height, "scale": 1})
        with open(path, "wb") as f:
            f.write(base64.b64decode(data["data"]))

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._read)
        os.close(self._write)


def layout_problems(found: dict, max_aspect: float = MAX_ASPECT,
                    max_page_height: float = MAX_PAGE_HEIGHT) -> list[str]:
    """What a reader would trip over in the measurements of `inspect`: figures drawn beyond
    max_aspect:1 either way (as drawn, and as the image is), a page taller than
    max_page_height."""
    problems = []
    for figure in found["figures"]:
        for kind, width, height in (("drawn", figure["width"], figure["height"]),
                                    ("image", figure["natural_width"],
                                     figure["natural_height"])):
            if not width or not height or not 1 / max_aspect <= width / height <= max_aspect:
                problems.append(f"{figure['id'] or 'a figure'}: {kind} {width:.0f} x "
                                f"{height:.0f} px, beyond {max_aspect:g}:1")
    if found["page_height"] > max_page_height:
        problems.append(f"the page is {found['page_height']} px tall (at most "
                        f"{max_page_height:g})")
    return problems


def find_chromium(explicit: str | None = None) -> str | None:
    for candidate in (explicit, os.environ.get("CHROMIUM"), *CHROMIUM_NAMES):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def inspect(report: str, out: str, width: int = 1400, height: int = 900,
            chromium: str | None = None, timeout: float = 120) -> dict:
    """Measure the report and write its screenshots into `out`; returns the measurements."""
    binary = find_chromium(chromium)
    if binary is None:
        raise FileNotFoundError("Chromium not found (Debian: apt-get install chromium)")
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="report-chromium-") as profile:
        browser = Browser(binary, profile, width, height)
        try:
            browser.call("Page.navigate", session=True,
                         url=pathlib.Path(report).resolve().as_uri())
            browser.wait_for("Page.loadEventFired", timeout)
            found = browser.evaluate(MEASURE)
            shots = [("top", 0.0)] + [(f"section-{s['id']}", s["top"])
                                      for s in found["sections"]]
            found["screenshots"] = []
            for name, top in shots:
                path = os.path.join(out, f"{name}.png")
                browser.screenshot(path, top, width, height)
                found["screenshots"].append(path)
        finally:
            browser.close()
    with open(os.path.join(out, "measurements.json"), "w") as f:
        json.dump(found, f, indent=1)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report")
    parser.add_argument("out")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--chromium", default=None)
    args = parser.parse_args(argv)
    try:
        found = inspect(args.report, args.out, args.width, args.height, args.chromium)
    except FileNotFoundError as error:
        print(f"inspect_report: {error}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as error:
        print(f"inspect_report: Chromium failed: {error}", file=sys.stderr)
        return 3
    print(json.dumps({k: v for k, v in found.items() if k != "screenshots"}, indent=1))
    for problem in layout_problems(found):
        print(f"inspect_report: {problem}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
