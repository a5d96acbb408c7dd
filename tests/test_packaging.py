"""The Docker image installs the project the way the README does, from the same dependency list."""
import re
import tomllib

from conftest import ROOT


def test_dockerfile_installs_from_pyproject():
    docker = (ROOT / "Dockerfile").read_text()
    assert re.search(r'pip install[^\n]*-e "\.\[test\]"', docker)
    assert "default-jre-headless" in docker
    # no second, hand-written dependency list that could drift from pyproject.toml
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        name = re.split(r"[<>=\[ ]", dep)[0]
        if name in ("torch", "torchvision"):
            continue
        assert not re.search(rf"pip install[^\n]*\b{re.escape(name)}\b", docker), name
    for required in ("torch", "torchvision", "numpy", "h5py", "pycocotools", "pyyaml"):
        assert any(d.startswith(required) for d in deps), required


def test_makefile_and_ci_use_the_same_install():
    make = (ROOT / "Makefile").read_text()
    assert '-e ".[test]"' in make
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci and "make test" in readme and "make quickstart" in readme
