"""The README stays a front door, and no relative link in it or in docs/ is broken."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md"))
# [text](target) and ![alt](target), outside code spans; targets with a scheme are not files
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def relative_links(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # fenced code
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code
    links = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue
        links.append(target.split("#", 1)[0])
    return links


def test_readme_is_at_most_250_lines():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; the reference belongs in docs/"


def test_link_finder_sees_links_and_skips_code():
    sample = ROOT / "README.md"
    assert "docs/grad_cam.gif" in relative_links(sample)
    assert "docs/cli.md" in relative_links(sample)


@pytest.mark.parametrize("page", [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *DOCS], ids=lambda p: p.name)
def test_relative_links_resolve(page):
    assert page.is_file(), page
    missing = [t for t in relative_links(page) if not (page.parent / t).exists()]
    assert not missing, f"{page.name}: links to missing files {missing}"


def test_docs_pages_exist():
    names = {p.name for p in DOCS}
    for page in (
        "index.md",
        "own-model.md",
        "gpu.md",
        "datasets.md",
        "faithfulness.md",
        "demo-model.md",
        "keras.md",
        "how-it-works.md",
        "input-checks.md",
        "performance.md",
        "verification.md",
        "cli.md",
        "api.md",
    ):
        assert page in names, page


def quick_start_commands(text: str) -> list[str]:
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_quick_start_is_exactly_two_commands_and_ci_runs_the_second():
    commands = quick_start_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(commands) == 2 and all("\n" not in c for c in commands), commands
    run, test = commands
    assert run.endswith("&& layerscope tour")  # the main job on the built-in default
    assert test.endswith("&& python -m pytest -q")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert ci == test, "the README's test command and .ci/run's differ"


def test_docs_home_repeats_the_readme_quick_start():
    readme = quick_start_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    home = quick_start_commands((ROOT / "docs" / "index.md").read_text(encoding="utf-8"))
    assert home == readme
