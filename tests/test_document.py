"""Tests of nnunet_transfer.document (the report builder) and scripts/screenshot_report.py.

One example report holds what a study's report holds and what can go wrong in it: a real
matplotlib figure, a real CSV (more rows than the preview, a name with a space, cells with
< & " |), Markdown pipe tables, a missing figure, a missing CSV, a missing image in the Markdown,
a status notice, an empty section and three levels of subsections, with <, & and quotes in the
titles. The HTML is read back with the standard library's HTML parser and the Markdown with
markdown-it-py (a CommonMark parser), not with the code under test. The browser check runs the
script on the same report where Chromium is installed (skipped otherwise, with the reason).
"""

from __future__ import annotations

import base64
import html.parser
import os
import shutil
import subprocess
import sys
from urllib.parse import unquote, urlsplit

import numpy as np
import pandas as pd
import pytest
from markdown_it import MarkdownIt

from nnunet_transfer.document import Section, builder, markdown_table, write_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "screenshot_report.py")
TITLE = 'Study <A> & "B"'
NASTY = '<b>&"quoted"</b> <script>x</script>'
FIGURE_RGB = (0, 170, 85)          # the bars' colour: used nowhere in the page's CSS
CSV_ROWS = 60
# 40 columns of numbers: far wider than the page, so it must scroll inside its box
WIDE_TABLE = markdown_table([[f"run {i}"] + [0.123456 * (i + j) for j in range(40)]
                             for i in range(3)],
                            columns=["run"] + [f"metric_{j}" for j in range(40)])
def build_example(folder: str) -> dict:
    """Write the example report into `folder`; returns the inputs the tests compare with."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(os.path.join(folder, "figures"), exist_ok=True)
    os.makedirs(os.path.join(folder, "tables"), exist_ok=True)
    figure_path = os.path.join(folder, "figures", "dice.png")
    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    ax.bar(["Scratch", "FineTune", "FrozenEncoder"], [0.81, 0.93, 0.94],
           color="#%02x%02x%02x" % FIGURE_RGB)
    ax.set_ylabel("test Dice")
    ax.set_title("Dice <per> strategy & n")
    fig.tight_layout()
    fig.savefig(figure_path)
    plt.close(fig)
    inline_path = os.path.join(folder, "figures", "inline.png")
    shutil.copyfile(figure_path, inline_path)

    csv_path = os.path.join(folder, "tables", "per case.csv")
    frame = pd.DataFrame({
        "case": [f"case_{i:03d}" for i in range(CSV_ROWS)],
        "strategy": ["A|B" if i == 1 else NASTY if i == 0 else "FineTune"
                     for i in range(CSV_ROWS)],
        "dsc": np.linspace(0.5, 0.99, CSV_ROWS).round(4),
        "hd95_mm": [np.nan if i == 2 else 1.5 + i for i in range(CSV_ROWS)],
    })
    frame.to_csv(csv_path, index=False)

    summary_table = markdown_table(pd.DataFrame({
        "strategy": ["nnUNetTrainer_Scratch", "FineTune*", "<Frozen> & co"],
        "n": [2, 5, 16], "test Dice": [0.81234, 0.93, np.nan]}))
    sections = [
        Section("Accuracy <by> n & strategy",
                markdown=("Mean ± std over the test cases; * p < 0.05.\n\n" + summary_table
                          + "\n" + WIDE_TABLE
                          + '\n| strategy | note | Dice |\n|---|---|---|\n'
                            '| A & B <i>x</i> | "q" \'s | 0.934 ± 0.012* |\n'
                            "\nInline ![inline figure](figures/inline.png) and "
                            "![gone](figures/gone.png).\n"),
                figures=[("figures/dice.png", "Test Dice per strategy (*n* = 5) & <more>"),
                         ("figures/not_there.png", "a figure the run did not write")],
                tables=[("tables/per case.csv", "Per-case results"),
                        ("tables/absent.csv", "never written")],
                status="3 of 20 runs failed: see `logs/<failed>` & retry",
                subsections=[Section("Per n", markdown="Text of 1.1.", subsections=[
                    Section("n = 2 'small'", markdown="Text of 1.1.1.")])]),
        Section("Empty & pending"),
        Section("Convergence", figures=[(figure_path, "absolute path")]),
    ]
    html_path, md_path = write_report(folder, TITLE, sections,
                                      summary="Summary with **bold** & <tag>.",
                                      generated_by="nnunet-transfer 0.1.0 (test)")
    return {"html": html_path, "md": md_path, "figure": figure_path, "inline": inline_path,
            "csv": csv_path, "frame": frame, "sections": sections}


class Page(html.parser.HTMLParser):
    """Tags, attributes, ids, text and table cells of an HTML page (standard library)."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.ids: set[str] = set()
        self.cells: list[tuple[str, bool]] = []     # (text, right-aligned)
        self.texts: dict[str, list[str]] = {}              # tag -> texts (h1, title, ...)
        self._open: list[tuple[str, dict, list[str]]] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag not in ("img", "meta", "br", "hr"):
            self._open.append((tag, attrs, []))

    def handle_endtag(self, tag):
        while self._open:
            open_tag, attrs, parts = self._open.pop()
            text = "".join(parts)
            if self._open:
                self._open[-1][2].append(text)
            if open_tag in ("td", "th"):
                self.cells.append((text, attrs.get("class") == "num"
                                   or attrs.get("style") == "text-align:right"))
            self.texts.setdefault(open_tag, []).append(text)
            if open_tag == tag:
                break

    def handle_data(self, data):
        if self._open:
            self._open[-1][2].append(data)

    def attributes(self, name: str) -> list[str]:
        return [attrs[name] for _, attrs in self.tags if attrs.get(name) is not None]


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("report"))
    built = build_example(folder)
    with open(built["html"], encoding="utf-8") as f:
        built["page_text"] = f.read()
    with open(built["md"], encoding="utf-8") as f:
        built["md_text"] = f.read()
    built["page"] = Page(built["page_text"])
    built["folder"] = folder
    return built


def _data_uri_bytes(uri: str) -> tuple[str, bytes]:
    header, _, payload = uri.partition(",")
    assert header.endswith(";base64"), header
    return header[len("data:"):-len(";base64")], base64.b64decode(payload, validate=True)


def test_html_is_self_contained(example):
    page, text = example["page"], example["page_text"]
    tags = {tag for tag, _ in page.tags}
    assert not tags & {"script", "link", "iframe", "object", "embed", "base"}
    assert "http://" not in text and "https://" not in text
    for src in page.attributes("src"):
        assert src.startswith("data:image/"), src
    for href in page.attributes("href"):
        assert href.startswith("#") or href.startswith("data:text/csv;"), href
        if href.startswith("#"):
            assert href[1:] in page.ids, f"anchor {href} has no target"
    csp = [a["content"] for t, a in page.tags if a.get("http-equiv") == "Content-Security-Policy"]
    assert csp == ["default-src 'none'; img-src data:; style-src 'unsafe-inline'"]
    assert not any(name.startswith("on") for _, attrs in page.tags for name in attrs)


def test_images_are_the_source_pngs(example):
    with open(example["figure"], "rb") as f:
        png = f.read()
    images = [a for t, a in example["page"].tags if t == "img"]
    # the inline Markdown image (a copy of the figure), the figure, the absolute-path figure
    assert len(images) == 3
    for image in images:
        mime, data = _data_uri_bytes(image["src"])
        assert mime == "image/png" and data == png
    assert [a["alt"] for a in images] == [
        "inline figure", "Test Dice per strategy (n = 5) & <more>", "absolute path"]
    figcaptions = example["page"].texts["figcaption"]
    assert figcaptions == ["Figure 1. Test Dice per strategy (n = 5) & <more>",
                           "Figure 2. absolute path"]


def test_csv_is_embedded_and_previewed(example):
    page = example["page"]
    links = [a for t, a in page.tags if t == "a" and a.get("href", "").startswith("data:")]
    assert len(links) == 1 and links[0]["download"] == "per case.csv"
    mime, data = _data_uri_bytes(links[0]["href"])
    with open(example["csv"], "rb") as f:
        assert mime == "text/csv;charset=utf-8" and data == f.read()
    cells = [text for text, _ in page.cells]
    frame = example["frame"]
    assert NASTY in cells and "A|B" in cells and "case_049" in cells
    assert "case_050" not in cells   # only the preview
    assert f"first {builder.PREVIEW_ROWS} of {CSV_ROWS} rows" in example["page_text"]
    right = dict(page.cells)
    assert right[f"{frame.dsc[3]:g}"] and right["hd95_mm"] and right[""]   # NaN: empty cell
    assert not right["case_003"] and not right["strategy"]


def test_markdown_tables_and_escaping(example):
    page, text = example["page"], example["page_text"]
    tags = {tag for tag, _ in page.tags}
    assert not tags & {"b", "i", "tag", "more", "failed"}   # from content: shown as text
    assert page.texts["title"] == [TITLE] and page.texts["h1"] == [TITLE]
    assert '<b>&"quoted"</b>' not in text and "&lt;b&gt;&amp;&quot;quoted&quot;&lt;/b&gt;" in text
    right = dict(page.cells)                                   # numbers right-aligned
    assert not right["A & B <i>x</i>"] and not right["\"q\" 's"] and right["0.934 ± 0.012*"]
    assert not right["<Frozen> & co"] and right["0.812"] and right["16"] and right["-"]
    headings = page.texts["h2"] + page.texts["h3"] + page.texts["h4"]
    assert "1 Accuracy <by> n & strategy" in headings and "1.1.1 n = 2 'small'" in headings
    assert "2 Empty & pending" in headings
    notices = " ".join(page.texts["p"] + page.texts["div"] + page.texts["span"])
    assert "3 of 20 runs failed: see logs/<failed> & retry" in notices
    assert "Summary with bold & <tag>." in page.texts["p"]


def test_missing_files_are_noticed(example):
    text = example["page_text"]
    paragraphs = example["page"].texts["p"]
    assert any("Figure not shown: figures/not_there.png (file not found)." in p
               for p in paragraphs)
    assert any("Table not shown: tables/absent.csv (file not found)." in p for p in paragraphs)
    assert "Image not shown: figures/gone.png (file not found)." in " ".join(
        example["page"].texts["span"])
    assert "Nothing to show yet." in paragraphs   # the empty section
    md = example["md_text"]
    assert "**Figure not shown:** `figures/not_there.png` (file not found)." in md
    assert "**Table not shown:** `tables/absent.csv` (file not found)." in md
    assert text.count('class="notice missing') == 3


def _markdown_links(md_text: str) -> list[tuple[str, str]]:
    found = []

    def walk(tokens):
        for token in tokens:
            if token.type == "link_open":
                found.append(("link", token.attrGet("href")))
            elif token.type == "image":
                found.append(("image", token.attrGet("src")))
            if token.children:
                walk(token.children)

    walk(MarkdownIt("commonmark").enable("table").parse(md_text))
    return found


def test_markdown_links_are_relative_and_valid(example):
    md, folder = example["md_text"], example["folder"]
    links = _markdown_links(md)
    targets = [target for _, target in links]
    assert "figures/dice.png" in targets and "tables/per%20case.csv" in targets
    assert targets.count("figures/dice.png") == 2       # the figure and its absolute-path twin
    for kind, target in links:
        parts = urlsplit(target)
        if target.startswith("#"):
            assert f'<a id="{target[1:]}"></a>' in md, target
            continue
        assert not parts.scheme and not parts.netloc and not target.startswith("/"), target
        if target == "figures/gone.png":
            continue            # written so in the section's Markdown; noticed in the HTML
        assert os.path.isfile(os.path.join(folder, unquote(target))), target


def test_markdown_renders_content_as_text(example):
    """report.md through a CommonMark renderer with raw HTML allowed: what comes from files
    and titles shows as written (the sections' own Markdown, captions included, is copied as
    written: its <i>, <tag> and <more> are the runner's Markdown)."""
    md = example["md_text"]
    page = Page(MarkdownIt("commonmark", {"html": True}).enable("table").render(md))
    tags = {tag for tag, _ in page.tags}
    assert not tags & {"b", "script"}
    cells = [text for text, _ in page.cells]
    assert NASTY in cells and "A|B" in cells and "nnUNetTrainer_Scratch" in cells
    assert "FineTune*" in cells and "<Frozen> & co" in cells and "0.934 ± 0.012*" in cells
    assert page.texts["h1"] == [TITLE]
    assert "1.1.1 n = 2 'small'" in page.texts["h4"]
    assert sum(1 for c in cells if c.startswith("case_")) == builder.PREVIEW_ROWS
    assert "nnUNetTrainer_Scratch" in md    # an underscore inside a word stays unescaped


def test_writes_are_atomic_and_deterministic(example, tmp_path):
    folder = example["folder"]
    assert not [n for n in os.listdir(folder) if n.endswith((".tmp", ".partial"))]
    umask = os.umask(0o022)
    os.umask(umask)
    for path in (example["html"], example["md"]):    # readable as any new file, not 0600
        assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    again = build_example(str(tmp_path))
    with open(again["html"], "rb") as f:
        html_again = f.read()
    with open(again["md"], "rb") as f:
        md_again = f.read()
    assert html_again == example["page_text"].encode() and md_again == example["md_text"].encode()


def test_no_sections_and_large_csv(tmp_path, monkeypatch):
    html_path, md_path = write_report(str(tmp_path / "empty"), "Nothing yet", [])
    with open(html_path) as f:
        page = Page(f.read())
    assert "No results to report yet." in page.texts["p"] and "nav" not in page.texts
    with open(md_path) as f:
        assert "*No results to report yet.*" in f.read()

    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "big table.csv").write_text("a,b\n" + "1,2\n" * 100)
    monkeypatch.setattr(builder, "INLINE_CSV_LIMIT", 50)
    html_path, _ = write_report(str(folder), "Big", [Section("T", tables=[("big table.csv", "")])])
    with open(html_path) as f:
        text = f.read()
    hrefs = Page(text).attributes("href")
    assert "big%20table.csv" in hrefs and not any(h.startswith("data:") for h in hrefs)
    assert "not embedded" in text


def test_keyed_sections_folded_details_and_figures_first(example, tmp_path):
    """A results section: its figure before its text, a stable anchor, a folded block; the
    data preview and the contents folded."""
    shutil.copyfile(example["figure"], tmp_path / "f.png")
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    sections = [Section("Findings", key="findings", markdown="Text <after>.",
                        figures=[("f.png", "the figure")], figures_first=True,
                        tables=[("t.csv", "data")],
                        details=[("the commands", "~~~\nnunet-transfer study run s.yaml\n~~~")])]
    html_path, md_path = write_report(str(tmp_path), "T", sections)
    with open(html_path) as f:
        text = f.read()
    page = Page(text)
    assert "findings" in page.ids and '<a href="#findings">' in text
    assert text.index("<figure") < text.index("Text &lt;after&gt;.")
    assert text.count("<details") == 3       # the contents, the CSV preview, the commands
    assert "<summary>the commands</summary>" in text and "show the 1 row<" in text
    with open(md_path) as f:
        md = f.read()
    assert '<a id="findings"></a>' in md and "(#findings)" in md
    assert "<details><summary>the commands</summary>" in md
    assert md.index("![Figure 1.](f.png)") < md.index("Text <after>.")


def _figure_file(path, width: float, height: float) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    figure = Figure(figsize=(width, height), dpi=50)
    FigureCanvasAgg(figure)
    figure.subplots().plot([0, 1], [0, 1])
    figure.savefig(path)
    return str(path)


def gallery_report(folder, shown_size=(6, 3), gallery=3) -> tuple[str, str]:
    """A section with one figure shown and `gallery` more (one of them 5:1) folded."""
    shown = _figure_file(folder / "shown.png", *shown_size)
    more = [(_figure_file(folder / f"run{k}.png", 10 if k == 0 else 4, 2 if k == 0 else 4),
             f"run {k}") for k in range(gallery)]
    return write_report(str(folder), "T", [Section(
        "Weights", figures=[(shown, "all runs")],
        gallery=(f"{gallery} more figures, one per run", more))])


def test_gallery_is_folded_and_listed(tmp_path):
    html_path, md_path = gallery_report(tmp_path)
    with open(html_path) as f:
        text = f.read()
    folded = text[text.index('<details class="gallery">'):]
    folded = folded[:folded.index("</details>")]
    assert text.count("<figure") == 4 and folded.count("<figure") == 3
    assert "<summary>3 more figures, one per run</summary>" in folded
    assert "<details open" not in text
    with open(md_path) as f:
        md = f.read()
    start = md.index("<details><summary>3 more figures, one per run</summary>")
    assert md.index("![Figure 1.](shown.png)") < start
    assert all(start < md.index(f"](run{k}.png)") < md.index("</details>", start)
               for k in range(3))


def test_bad_items_are_refused(tmp_path):
    with pytest.raises(TypeError, match="a figure is"):
        write_report(str(tmp_path), "x", [Section("s", figures=[("a", "b", "c")])])
    figure = tmp_path / "not_png.png"
    figure.write_text("hello")
    html_path, _ = write_report(str(tmp_path), "x", [Section("s", figures=[str(figure)])])
    with open(html_path) as f:
        notices = Page(f.read()).texts["p"]
    assert f"Figure not shown: {figure} (not an image (PNG, JPEG, GIF, WebP or SVG))." in notices


def test_markdown_table():
    frame = pd.DataFrame({"name": ["a|b", "c*", None], "x": [0.12345, np.nan, 2.0],
                          "n": pd.array([1, None, 3], dtype="Int64"), "ok": [True, False, True]})
    assert markdown_table(frame, digits=2) == (
        "| name | x | n | ok |\n"
        "|---|---:|---:|---|\n"
        "| a\\|b | 0.12 | 1 | True |\n"
        "| c\\* | - | - | False |\n"
        "| - | 2.00 | 3 | True |\n")
    rows = [{"k": "nnUNetTrainer_FineTune", "v": 1}, {"k": "_x_", "w": 2.5}]
    assert markdown_table(rows) == ("| k | v | w |\n|---|---:|---:|\n"
                                    "| nnUNetTrainer_FineTune | 1 | - |\n"
                                    "| \\_x\\_ | - | 2.500 |\n")
    assert markdown_table([("a", 1)], columns=["s", "i"]) == "| s | i |\n|---|---:|\n| a | 1 |\n"
    indexed = pd.DataFrame({"v": [1.0]}, index=pd.Index(["r"], name="row"))
    assert markdown_table(indexed, index=True) == "| row | v |\n|---|---:|\n| r | 1.000 |\n"
    with pytest.raises(ValueError, match="columns"):
        markdown_table([("a", 1)])


# ---------------------------------------------------------------------------------------------
# The real-browser check

def _run_script(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_screenshot_script_without_chromium(example, tmp_path):
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "CHROMIUM"}
    env["PATH"] = str(empty_bin)
    result = _run_script(example["html"], str(tmp_path / "shot.png"), env=env)
    assert result.returncode == 2, result.stderr
    assert "Chromium not found" in result.stderr and "apt-get install chromium" in result.stderr


@pytest.mark.usefixtures("chromium")
def test_report_renders_in_chromium(example, tmp_path):
    from PIL import Image

    out = tmp_path / "report.png"
    result = _run_script(example["html"], str(out), "--width", "1280", "--height", "2400")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rendered" in result.stdout
    with Image.open(out) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    assert pixels.shape == (2400, 1280, 3)

    def area(rgb, tolerance=6):
        return int((np.abs(pixels - np.array(rgb)).max(axis=2) <= tolerance).sum())

    # the inlined figure's bars were drawn by the browser (twice: inline and as Figure 1)
    assert area(FIGURE_RGB) > 10_000
    assert area((0xff, 0xf8, 0xc5)) > 5_000     # the status notice's background: CSS applied
    assert area((0xff, 0xeb, 0xe9)) > 2_000     # the missing-file notices
    assert area((0xf6, 0xf8, 0xfa)) > 20_000    # contents box and table headers
    # nothing is drawn right of the main column (max 72rem = 1152 px, centred): the wide
    # table scrolls inside its box instead of widening the page
    assert (pixels[:, 1220:] >= 250).all()
    assert (pixels[:, 1100:1200] < 200).any()      # while the wide table does reach the edge


def _inspect():
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        import inspect_report
    finally:
        sys.path.remove(os.path.join(ROOT, "scripts"))
    return inspect_report


@pytest.mark.usefixtures("chromium")
def test_figures_as_drawn_and_the_page_height(tmp_path):
    """In the browser at 1400 px: the gallery's figures are not drawn until unfolded; a figure
    drawn beyond 3:1 and a page beyond its height are named by layout_problems."""
    inspect_report = _inspect()
    (tmp_path / "good").mkdir()
    html_path, _ = gallery_report(tmp_path / "good")
    found = inspect_report.inspect(html_path, str(tmp_path / "good" / "shots"), width=1400)
    assert [f["id"] for f in found["figures"]] == ["figure-1"]
    assert found["folded_figures"] == 3
    [figure] = found["figures"]
    assert figure["width"] / figure["height"] == pytest.approx(2, rel=0.02)
    assert inspect_report.layout_problems(found) == []
    assert inspect_report.layout_problems(found, max_page_height=100) == [
        f"the page is {found['page_height']} px tall (at most 100)"]

    (tmp_path / "strip").mkdir()
    html_path, _ = gallery_report(tmp_path / "strip", shown_size=(16, 4), gallery=0)
    found = inspect_report.inspect(html_path, str(tmp_path / "strip" / "shots"), width=1400)
    assert found["folded_figures"] == 0
    problems = inspect_report.layout_problems(found)
    assert len(problems) == 2 and all(p.startswith("figure-1: ") for p in problems)
    assert "beyond 3:1" in problems[0]


@pytest.mark.usefixtures("chromium")
def test_blank_page_is_refused(tmp_path):
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    result = _run_script(str(blank), str(tmp_path / "blank.png"), "--width", "400",
                         "--height", "300")
    assert result.returncode == 4, result.stdout + result.stderr
    assert "looks blank" in result.stderr
