"""What the sdist and the wheel carry: the model, the schemas, the licence, and the tests' own files."""

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

BUILD = "import sys; from setuptools import build_meta; print(getattr(build_meta, sys.argv[1])(sys.argv[2]))"


@pytest.fixture(scope="module")
def distributions(tmp_path_factory) -> tuple[Path, Path]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: the files to package are those git tracks")
    source = tmp_path_factory.mktemp("source")
    for name in filter(None, listed.stdout.decode().split("\0")):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((REPO / name).read_bytes())
    dist = tmp_path_factory.mktemp("dist")
    built = []
    for hook in ("build_sdist", "build_wheel"):  # one process each: a build leaves setuptools state behind
        done = subprocess.run([sys.executable, "-c", BUILD, hook, str(dist)], cwd=source, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        built.append(dist / done.stdout.split()[-1])
    return built[0], built[1]


def test_the_sdist_holds_what_its_tests_and_readme_need(distributions):
    with tarfile.open(distributions[0]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for needed in ["LICENSE", "README.md", "tests/conftest.py", "tests/model_fixtures.py", "tests/kafka_fixtures.py",
                   "tests/crash_helpers.py", "tests/fixtures/gmb_sample.csv", "examples/news.jsonl",
                   "schemas/entity_record.v1.json", "scripts/kafka.sh", "nerbatch/models/default/model.keras",
                   "nerbatch/models/default/manifest.json"]:
        assert needed in names, needed
    assert not [n for n in names if n.startswith((".venv", ".kafka", ".git/", "out/")) or "__pycache__" in n]


def test_the_wheel_holds_the_model_schemas_and_licence(distributions):
    with zipfile.ZipFile(distributions[1]) as wheel:
        names = set(wheel.namelist())
    model = {n.rsplit("/", 1)[1] for n in names if n.startswith("nerbatch/models/default/")}
    assert {"model.keras", "vocab.json", "tags.json", "config.json", "transitions.json", "manifest.json"} <= model
    assert {f"nerbatch/schemas/{s}.v1.json" for s in ("document", "entity_record", "error_record",
                                                      "document_outcome")} <= names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), sorted(n for n in names if "dist-info" in n)
    assert not [n for n in names if n.startswith("tests/")]


def test_the_docker_image_builds_from_what_its_dockerfile_copies(tmp_path):
    """No Docker engine needed: the files the Dockerfile copies are all that `pip install .` gets there."""
    import re
    import shutil

    dockerfile = (REPO / "docker" / "Dockerfile").read_text(encoding="utf-8")
    ignore = (REPO / "docker" / "Dockerfile.dockerignore").read_text(encoding="utf-8").split()
    context = tmp_path / "app"
    context.mkdir()
    for line in re.findall(r"(?m)^COPY (.+)$", dockerfile):
        *sources, _ = line.split()
        for source in sources:
            assert f"!{source.rstrip('/')}" in ignore or f"!{source.rstrip('/')}/" in ignore, source
            if (REPO / source).is_dir():
                shutil.copytree(REPO / source, context / source, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(REPO / source, context / source)
    done = subprocess.run([sys.executable, "-c", BUILD, "build_wheel", str(tmp_path)], cwd=context,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "did not match any files" not in done.stderr, done.stderr[-3000:]
    with zipfile.ZipFile(tmp_path / done.stdout.split()[-1]) as wheel:
        names = set(wheel.namelist())
    assert "nerbatch/models/default/model.keras" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
