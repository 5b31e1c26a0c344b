"""The docs say only what exists: a short README, a site that builds strictly, generated reference pages that
match the code, and every make target, `mlops` command, params key and file path they name is real."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlops import cli, commands, reference
from mlops.params_io import read_yaml

from conftest import REPO

DOCS = sorted((REPO / "docs").rglob("*.md"))
PAGES = [REPO / "README.md", *DOCS]
FENCE = re.compile(r"```.*?```", re.S)
SPAN = re.compile(r"`([^`\n]+)`")


def code_texts(path: Path) -> list[str]:
    """The code spans and code blocks of a markdown file (where commands, keys and paths are named)."""
    text = path.read_text()
    blocks = FENCE.findall(text)
    return blocks + SPAN.findall(FENCE.sub("", text))


def invoked(code: str, tool: str) -> list[str]:
    """The first word after `tool` where a command line calls it: at the start of a line or span, or
    after a shell operator or `$ ` (not prose such as "its make targets" inside a help text)."""
    pattern = rf"(?:^|\$ |&& |; |\| |\$\(){tool} ([a-z][a-z0-9-]*[a-z0-9])(?![<\w-])"
    return re.findall(pattern, code, re.M)


def make_targets() -> set[str]:
    names: set[str] = set()
    for line in (REPO / "Makefile").read_text().splitlines():
        m = re.match(r"^([a-zA-Z0-9_ %-]+):(?!=)", line)
        if m:
            names.update(m.group(1).split())
    return names


def test_readme_is_a_short_front_page():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 150, len(lines)
    assert any(line.startswith("```mermaid") for line in lines), "the loop diagram"


def test_reference_pages_are_generated_from_the_code():
    """docs/reference/{params,cli,exit-codes,make-targets}.md equal what `mlops reference` writes now."""
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        generated = reference.generate(REPO)
    finally:
        os.chdir(cwd)
    for name, text in generated.items():
        committed = (REPO / "docs/reference" / name).read_text()
        assert committed == text, f"docs/reference/{name} is stale: run `mlops reference` (make docs does)"


def test_the_site_builds_strictly(tmp_path):
    """mkdocs --strict: a broken link or anchor, or a page missing from the nav, fails the build."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    mkdocs = Path(sys.executable).parent / "mkdocs"
    proc = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_readme_links_point_at_existing_pages():
    text = (REPO / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (REPO / target).exists(), target


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_make_target_and_mlops_command_named_exists(page):
    targets = make_targets()
    known = set(cli.stage_names()) | set(commands.all_commands())
    for code in code_texts(page):
        for target in invoked(code.strip(), "make"):
            assert target in targets, f"{page.name}: `make {target}`: no such target"
        for command in invoked(code.strip(), "mlops"):
            assert command in known, f"{page.name}: `mlops {command}`: no such command"


# files the docs name that exist only once the loop ran (the promotion records `mlops promote` writes) or
# once the tools are installed (`make install-dev`; a CI image keeps them elsewhere: NODE_MODULES)
WRITTEN_BY_PROMOTE = {"deploy/envs/staging/model.yaml", "deploy/envs/production/model.yaml"}
INSTALLED = ("tools/node_modules",)
PATH_TOKEN = re.compile(
    r"^(?:src|tests|charts|deploy|docs|monitoring|benchmarks|tools|\.github|\.ci)/[\w./-]*$"
)
TOP_FILES = {"params.yaml", "dvc.yaml", "dvc.lock", "Makefile", "pyproject.toml", "mkdocs.yml", "Jenkinsfile"}


# a team may delete benchmarks/ (its tests go with it); the docs' benchmark paths are checked while it exists
OPTIONAL = ("benchmarks/",)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_file_path_named_exists(page):
    for code in code_texts(page):
        for token in re.split(r"[\s,;()\"'=]+", code):
            token = token.rstrip(".:`")
            if token in WRITTEN_BY_PROMOTE or token.startswith(INSTALLED):
                continue
            if token.startswith(OPTIONAL) and not (REPO / token.split("/")[0]).exists():
                continue
            if PATH_TOKEN.match(token) or token in TOP_FILES:
                assert (REPO / token).exists(), f"{page.name}: `{token}` does not exist"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_params_key_named_exists(page):
    """A `section.key...` the docs name is a key path of the shipped params.yaml."""
    params = read_yaml(REPO / "params.yaml")
    for code in SPAN.findall(FENCE.sub("", page.read_text())):
        m = re.fullmatch(r"([a-z_]+(?:\.[a-z_0-9]+)+)(?:: .*)?", code.strip())
        if not m or m.group(1).split(".")[0] not in params:
            continue
        if re.search(r"\.(py|md|ya?ml|json|parquet|txt|toml)$", m.group(1)):
            continue  # a file name such as `train.py`
        node = params
        for part in m.group(1).split("."):
            if isinstance(node, list):
                break
            assert isinstance(node, dict) and part in node, f"{page.name}: `{m.group(1)}` is not a params key"
            node = node[part]
