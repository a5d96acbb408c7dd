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


GENERIC = {"misc", "tools", "prepro", "pooling", "main", "demo"}


def test_the_wheel_is_one_package_nbt_with_its_configs_and_three_commands(tmp_path):
    """Installed, the project claims the name `nbt` only (no top-level misc/, tools/, main ...)."""
    import subprocess
    import sys
    import zipfile
    import shutil
    src = tmp_path / "src"                        # a copy: building writes build/ and *.egg-info there
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("misc", "pooling", "prepro", "tools", "cfgs"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for path in [ROOT / "pyproject.toml", ROOT / "README.md", ROOT / "LICENSE", *ROOT.glob("*.py")]:
        shutil.copy(path, src / path.name)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                          "-w", str(tmp_path), str(src)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next(tmp_path.glob("nbt-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"nbt"}
    assert GENERIC.isdisjoint(tops)
    for module in ("nbt/__init__.py", "nbt/main.py", "nbt/demo.py", "nbt/misc/api.py", "nbt/pooling/roi_align.py",
                   "nbt/prepro/prepro_dic_coco.py", "nbt/tools/web_demo.py", "nbt/cfgs/world.yml",
                   "nbt/cfgs/normal_coco_res101.yml"):
        assert module in names, module
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry).decode()
    for line in ("nbt-train = nbt.main:main", "nbt-demo = nbt.demo:main", "nbt-web = nbt.tools.web_demo:main"):
        assert line in scripts


def test_a_checkout_runs_its_own_code_even_with_another_nbt_on_the_path(tmp_path):
    """`python main.py` from a checkout uses that checkout, not an installed or shadowing `nbt`."""
    import subprocess
    import sys
    impostor = tmp_path / "nbt"
    impostor.mkdir()
    (impostor / "__init__.py").write_text("raise ImportError('the impostor nbt was imported')\n")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    for script in ("main.py", "demo.py", "prepro/prepro_det.py", "prepro/prepro_dic_flickr.py", "tools/web_demo.py"):
        out = subprocess.run([sys.executable, str(ROOT / script), "--help"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0 and "impostor" not in out.stderr, (script, out.stderr[-1500:])


def test_misc_imports_point_down_the_chain():
    """misc/ (the library) never imports the commands or tools built on it."""
    import ast
    for path in sorted((ROOT / "misc").glob("*.py")) + sorted((ROOT / "pooling").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                parts = name.split(".")
                assert parts[0] not in GENERIC, f"{path.name}: imports {name} (use nbt.{name})"
                if parts[0] == "nbt":
                    assert parts[1:2] in (["misc"], ["pooling"]), f"{path.name} imports {name}"


# The chain a batch travels, as the README's "Layout" lists it: image -> proposals -> region
# features -> decoder -> decoding -> evaluation -> training -> session.
CHAIN = [
    ["io", "legacy_pickle", "config", "runtime", "npz_cache", "weights", "original_infos"],  # foundations
    ["plurals", "vocab", "chinese", "language", "dcc", "annotations", "captions"],        # words and annotations
    ["transforms", "proposals", "detector", "calibration"],                        # image -> proposals
    ["features", "targets", "dataset"],                                            # batches
    ["encoded", "backbone", "regions", "grouping", "attention"],                   # region features
    ["decoder_base", "slot_heads", "model", "baselines", "losses", "captioner"],   # decoder
    ["decoding", "slot_filling", "inference"],                                     # decoding
    ["metrics", "cider", "evaluation"],                                            # evaluation
    ["scst", "builders", "original_checkpoint", "checkpoint", "trainer"],          # training
    ["session", "api"],                                                            # session
]


def test_every_misc_module_imports_only_from_modules_before_it_in_the_chain():
    import ast
    order = [m for layer in CHAIN for m in layer]
    on_disk = {p.stem for p in (ROOT / "misc").glob("*.py")} - {"__init__"}
    assert set(order) == on_disk, f"place these modules in CHAIN: {on_disk ^ set(order)}"
    for i, module in enumerate(order):
        tree = ast.parse((ROOT / "misc" / f"{module}.py").read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                if name.startswith("nbt.misc."):
                    dep = name.split(".")[2]
                    assert dep in order[:i], f"misc/{module}.py imports {dep}, which comes after it"
