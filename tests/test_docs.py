"""The documentation site (mkdocs.yml, docs/): figures rendered from their files, every old README heading with a home,
the README a front page, the benchmark files named for readers, and (where mkdocs is installed) the strict build.

Nothing here starts Ray; the strict build imports the code (the configuration hook reads its models)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BENCHMARKS = DOCS / "benchmarks"


def load_hook(name: str):
    spec = importlib.util.spec_from_file_location(f"docs_hook_{name}", DOCS / "hooks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


figures = load_hook("figures")


def pages() -> list[Path]:
    return sorted(path for path in DOCS.rglob("*.md") if "hooks" not in path.parts)


def marked_sources() -> list[Path]:
    return pages() + [DOCS / "hooks" / "app_args.yaml"]


# -- figures -------------------------------------------------------------------------------------------------------


def test_every_figure_marker_resolves_to_a_value_in_its_file():
    count = 0
    for path in marked_sources():
        text = path.read_text()
        for match in figures.MARKER.finditer(text):
            if match.group(1):
                continue  # an escaped marker, shown as written
            rendered = figures.render(match.group(2), match.group(3))
            assert rendered.strip() and "{{" not in rendered, (path, match.group(0))
            count += 1
        escaped = len(re.findall(r"\\\{\{\s*(?:figure|runs|span|observed)\(", text))
        left = re.findall(r"\{\{\s*(?:figure|runs|span|observed)\(", figures.render_text(text, str(path)))
        assert len(left) == escaped, f"{path}: a figure marker the hook does not recognise (a typo?)"
    assert count > 200, f"only {count} figure markers: are the pages' figures typed by hand again?"


def test_a_missing_file_key_or_malformed_marker_fails():
    with pytest.raises(figures.FigureError, match="does not exist"):
        figures.render_text('{{ figure("cpu/no-such-run.json", "first_click_ms.p50") }}')
    with pytest.raises(figures.FigureError, match="no key"):
        figures.render_text('{{ figure("cpu/click-path-run1.json", "first_click_ms.p51") }}')
    with pytest.raises(figures.FigureError, match="not a figure"):
        figures.render_text('{{ figure("cpu/click-path-run1.json", "first_click_ms") }}')
    with pytest.raises(figures.FigureError, match="malformed"):
        figures.render_text('{{ figure("cpu/click-path-run1.json") }}')


def test_markers_render_the_files_values():
    assert figures.render_text('{{ figure("cpu/click-path-run1.json", "repeat_click_ms.p50") }}') == "138.6"
    assert figures.render_text('{{ figure("cpu/click-path-run1.json", "repeat_click_ms.p50", ".0f") }}') == "139"
    assert figures.render_text('{{ figure("containers/check-run1.json", "recovery_after_restart_s", ".0f") }}') == "61"
    runs = '["cpu/click-path-run1.json", "cpu/click-path-run2.json", "cpu/click-path-run3.json"]'
    assert figures.render_text('{{ runs(%s, "echo_ms.p50", ".1f") }}' % runs) == "20.1 / 18.7 / 18.7"
    assert figures.render_text('{{ span(%s, "echo_ms.p50", ".1f") }}' % runs) == "18.7-20.1"
    assert figures.render_text('{{ figure("batch/cpu-throughput.json", "batch.job.driver_rss_mb.start", ".2f", '
                               'scale=0.001) }}') == "3.28"
    assert figures.render_text('\\{{ figure("x.json", "k") }}') == '{{ figure("x.json", "k") }}'
    assert figures.render_text('{{ observed("654 s", "a shell") }}') == "654 s (observed: a shell)"


def test_the_drifted_gpu_figures_render_what_their_files_say():
    """The README once typed these by hand and they drifted from their files (issue: docs a person can use)."""
    text = (DOCS / "performance.md").read_text()
    gpu = "gpu/h100-2026-11-26/"
    # "74 ms with Serve's latency flags" was the flags run's concurrency-1 figure: the first click p50 is the one.
    assert f'{{{{ figure("{gpu}graph-serve-flags.json", "first_click_ms.p50", ".0f") }}}} ms with Serve\'s latency flags' in text
    # "mask only 45 / 35 ms": run 2 says 42.59; the 35 came from the flags run.
    assert f'mask only {{{{ runs(["{gpu}graph-run1.json", "{gpu}graph-run2.json"], "repeat_click_mask_only_ms.p50", ".0f") }}}}' in text
    # "encoder 13": 13 ms is the `mask` stage, not the encoder.
    assert 'the `mask` stage {{ figure("gpu/h100-2026-11-26/graph-run2.json", "sizes.1024x768.stages_ms.mask", ".0f") }}' in text
    # "38 / 54 per second" left out run 1's 14 first clicks per second.
    assert '{{ figure("gpu/h100-2026-11-26/graph-run1.json", "concurrency.8.first_click_rps", ".0f") }}' in text
    rendered = figures.render_text(text)
    assert "84 ms with Serve's latency flags" in rendered
    assert "mask only 45 / 43 ms (35 ms with the latency flags)" in rendered
    assert "run 1: 14 / 57 per second; run 2: 38 / 54 per second" in rendered


# -- nothing lost ----------------------------------------------------------------------------------------------------


def slug(text: str) -> str:
    """Python-Markdown's toc slugify (what MkDocs gives a heading without an explicit id)."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    found = set()
    in_code = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        match = None if in_code else re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if match:
            explicit = re.search(r"\{#([\w-]+)\}\s*$", match.group(1))
            found.add(explicit.group(1) if explicit else slug(re.sub(r"`", "", match.group(1))))
    return found


def test_every_heading_of_the_old_readme_has_a_home_on_the_site():
    entries = [line.split(" -> ") for line in (DOCS / "readme-headings.txt").read_text().splitlines() if " -> " in line]
    assert len(entries) >= 21
    for heading, home in entries:
        page, _, anchor = home.partition("#")
        path = DOCS / page
        assert path.exists(), f"{heading}: {page} does not exist"
        assert anchor in anchors(path), f"{heading}: {page} has no heading #{anchor}"


def test_every_page_is_in_the_navigation():
    import yaml

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text().split("\nhooks:", 1)[0] + "\n" +
                         "nav:" + (ROOT / "mkdocs.yml").read_text().split("\nnav:", 1)[1])["nav"]
    listed = set(re.findall(r"[\w/.-]+\.md", str(nav)))
    for page in pages():
        assert str(page.relative_to(DOCS)) in listed, f"{page.relative_to(DOCS)} is not in mkdocs.yml's nav"


# -- the README, a front page ----------------------------------------------------------------------------------------


def test_readme_is_a_front_page_that_links_into_the_docs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "make serve" in quick and "make test" in quick
    links = re.findall(r"\]\(((?!https?:|#)[^)\s]+)\)", readme)
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        path, _, anchor = link.partition("#")
        assert (ROOT / path).exists(), f"README links to {link}, which does not exist"
        if anchor and path.endswith(".md"):
            assert anchor in anchors(ROOT / path), f"README links to {link}: no such heading there"


def test_no_figure_in_the_readme_and_no_bit_for_bit_anywhere():
    readme = (ROOT / "README.md").read_text()
    assert not re.search(r"\b\d+(\.\d+)?\s?(ms|s|MB|GB|MiB|GiB|x)\b(?![\w-])", re.sub(r"```.*?```", "", readme, flags=re.S)), \
        "a measured figure in the README: cite it on the site, from its file"
    for path in [ROOT / "README.md", *marked_sources()]:
        assert "bit " + "for bit" not in path.read_text().lower(), path  # the phrase split, so this file passes too


# -- docs/benchmarks for readers -------------------------------------------------------------------------------------


def test_benchmark_files_are_named_for_readers_and_indexed():
    index = (BENCHMARKS / "index.md").read_text()
    for path in BENCHMARKS.rglob("*"):
        if path.is_dir():
            continue
        name = str(path.relative_to(BENCHMARKS))
        assert not re.search(r"issue\d+|stop\d+", name), f"{name}: named after a work item"
        if path.suffix in (".json", ".txt", ".png"):
            assert name in index, f"{name} is not in docs/benchmarks/index.md"


# -- the build -------------------------------------------------------------------------------------------------------

MKDOCS = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")


@pytest.mark.skipif(MKDOCS is None, reason="mkdocs is not installed (pip install -e '.[docs]'; make test installs it)")
def test_the_site_builds_strict(tmp_path):
    result = subprocess.run([MKDOCS, "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                            capture_output=True, text=True, timeout=600, env={**__import__("os").environ,
                                                                              "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    built = (tmp_path / "site" / "performance" / "index.html").read_text()
    assert "{{" not in built and "observed:" in built
