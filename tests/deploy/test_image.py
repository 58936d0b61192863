"""The Dockerfile, checked without a Docker engine: its base image is Ray's GPU image of the Ray and
Python this project runs, everything it copies exists, and what it installs resolves on PyPI."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import pytest
import ray
import tomllib
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from tests.deploy.config import ROOT, the

DOCKERFILE = ROOT / "Dockerfile"


def certifi_bundle() -> str:
    import certifi

    return certifi.where()


# pip runs --isolated (PyPI only, as in the image, not this machine's local wheel indexes), so it is
# given the certificate bundle its configuration would have named.
CA_BUNDLE = os.environ.get("PIP_CERT") or certifi_bundle()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    text = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")),
    )
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def build_args() -> dict[str, str]:
    return dict(args.split("=", 1) for op, args in instructions() if op == "ARG" and "=" in args)


def expand(text: str) -> str:
    values = build_args()
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values[m.group(1) or m.group(2)], text)


def base_image() -> tuple[str, str]:
    [image] = [expand(args) for op, args in instructions() if op == "FROM"]
    name, tag = image.split(":")
    return name, tag


def pip_installs() -> list[list[str]]:
    """The arguments of every `pip install` the Dockerfile runs, build args filled in."""
    commands = []
    for op, args in instructions():
        if op == "RUN":
            for command in re.split(r"&&|;", args):
                words = shlex.split(expand(command))
                if words[:2] == ["pip", "install"]:
                    commands.append(words[2:])
    return commands


def requirements_of(arguments: list[str]) -> list[str]:
    """The requirements among `pip install` arguments (options and their values left out)."""
    found, skip = [], False
    for word in arguments:
        if skip:
            skip = False
        elif word in {"--index-url", "-i", "--extra-index-url", "--constraint", "-c"}:
            skip = True
        elif not word.startswith("-"):
            found.append(word)
    return found


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_base_image_is_rays_gpu_image_of_the_installed_ray_and_python():
    name, tag = base_image()
    assert name == "rayproject/ray"
    version, python, flavour = re.fullmatch(r"(\d+\.\d+\.\d+)-py(\d+)-(\w+)", tag).groups()
    assert flavour == "gpu"
    assert version == ray.__version__, "the image must run the Ray the tests run"
    assert python == f"{sys.version_info.major}{sys.version_info.minor}", "the image's Python is the tested one"
    [pin] = [Requirement(r) for r in project()["dependencies"] if Requirement(r).name == "ray"]
    assert Version(version) in pin.specifier
    assert Version(f"{python[0]}.{python[1:]}") in SpecifierSet(project()["requires-python"])


def test_rayservice_runs_the_images_ray_version():
    _, tag = base_image()
    assert the("RayService")["spec"]["rayClusterConfig"]["rayVersion"] == tag.split("-")[0]


IMAGE_EXTRAS = ".[postgres,gpu,s3]"


def test_image_pins_ray_to_the_base_images_version_and_installs_the_postgres_gpu_and_s3_extras():
    requirements = [word for command in pip_installs() for word in requirements_of(command)]
    assert f"ray[serve]=={ray.__version__}" in requirements
    assert IMAGE_EXTRAS in requirements
    names = {Requirement(r).name for r in requirements if r != IMAGE_EXTRAS}
    assert {"torch", "torchvision"} <= names
    assert "psycopg" in {Requirement(r).name for r in project()["optional-dependencies"]["postgres"]}
    assert "torchao" in {Requirement(r).name for r in project()["optional-dependencies"]["gpu"]}
    assert "s3fs" in {Requirement(r).name for r in project()["optional-dependencies"]["s3"]}


def test_the_image_copies_every_package_the_project_installs():
    # `pip install .` in the image packs only what was copied in: a package left out (the web page's
    # files, say) would be missing from the image without any error.
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in patterns}
    copied = {
        source.rstrip("/")
        for op, args in instructions()
        if op == "COPY"
        for source in [w for w in args.split()[:-1] if not w.startswith("--")]
    }
    assert packages <= copied, sorted(packages - copied)
    for package in packages:
        assert (ROOT / package).is_dir(), package


def test_every_file_the_image_copies_exists_and_is_not_docker_ignored():
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    copies = [args.split() for op, args in instructions() if op in {"COPY", "ADD"}]
    assert copies
    for words in copies:
        sources = [w for w in words[:-1] if not w.startswith("--")]
        for source in sources:
            assert (ROOT / source).exists(), source
            assert source.rstrip("/") not in ignored, source


def test_the_docker_build_context_leaves_out_local_state():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "data"} <= ignored


@pytest.mark.timeout(300)
def test_what_the_image_installs_exists_on_pypi_and_agrees(tmp_path):
    """The Dockerfile's `pip install` requirements, each found on PyPI for this machine's platform and
    Python (the image's: Linux x86-64, the tested Python), and consistent with one another: every
    requirement one of them (the project included) has on another is met by the version installed.
    Only the top level is fetched (a full resolution takes minutes of index requests); the image
    build resolves the rest."""
    requirements = [
        str(ROOT) + word[1:] if word.startswith(".[") else word
        for command in pip_installs()
        for word in requirements_of(command)
    ]
    extras = [*(r for extra in ("postgres", "gpu", "s3") for r in project()["optional-dependencies"][extra])]
    report = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--isolated",
            "--cert",
            CA_BUNDLE,
            "install",
            "--dry-run",
            "--no-deps",
            "--ignore-installed",
            "--quiet",
            "--report",
            str(report),
            *requirements,
            *extras,
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    installed = json.loads(report.read_text())["install"]
    chosen = {item["metadata"]["name"].lower(): Version(item["metadata"]["version"]) for item in installed}
    assert chosen["ray"] == Version(ray.__version__)
    assert {"torch", "torchvision", "psycopg", "torchao", "s3fs", "qwen-image-service"} <= set(chosen)
    for item in installed:
        for line in item["metadata"].get("requires_dist", []):
            needed = Requirement(line)
            extra_only = needed.marker is not None and "extra" in str(needed.marker)
            if needed.name.lower() in chosen and not extra_only:
                assert chosen[needed.name.lower()] in needed.specifier, f"{item['metadata']['name']} needs {needed}"
