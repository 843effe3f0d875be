"""terraform fmt/validate/test, only where a terraform binary and a local provider mirror exist.

Nothing is downloaded: `terraform init -plugin-dir` reads providers from TGB_TF_PLUGIN_DIR
(default /opt/tf-plugins, laid out like a filesystem mirror). Without them these tests skip;
the python-hcl2 and checkov tests still run.
"""

import os
import pathlib
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
TERRAFORM = shutil.which("terraform")
PLUGIN_DIR = pathlib.Path(os.environ.get("TGB_TF_PLUGIN_DIR", "/opt/tf-plugins"))
HAVE_MIRROR = (PLUGIN_DIR / "registry.terraform.io" / "hashicorp" / "aws").is_dir()

needs_terraform = pytest.mark.skipif(TERRAFORM is None, reason="no terraform binary")
needs_mirror = pytest.mark.skipif(
    TERRAFORM is None or not HAVE_MIRROR, reason=f"no terraform binary or no provider mirror at {PLUGIN_DIR}"
)


def tf(args, cwd, timeout=300):
    env = dict(os.environ, TF_IN_AUTOMATION="1", CHECKPOINT_DISABLE="1", TF_CLI_CONFIG_FILE="/dev/null")
    proc = subprocess.run([TERRAFORM, *args, "-no-color"], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"terraform {' '.join(args)} in {cwd}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.fixture
def workdir(tmp_path):
    """A copy of terraform/ and examples/ (init writes .terraform/ and a lock file)."""
    shutil.copytree(REPO / "terraform", tmp_path / "terraform")
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    return tmp_path


def init(cwd):
    tf(["init", "-backend=false", "-input=false", f"-plugin-dir={PLUGIN_DIR}"], cwd)


@needs_terraform
def test_fmt():
    for d in ("terraform", "examples"):
        out = tf(["fmt", "-check", "-recursive", "-list=true"], REPO / d)
        assert out.strip() == "", f"run terraform fmt -recursive {d}: {out}"


@needs_mirror
def test_module_validate_and_test(workdir):
    init(workdir / "terraform")
    tf(["validate"], workdir / "terraform")
    out = tf(["test"], workdir / "terraform", timeout=600)
    assert "0 failed" in out, out


@needs_mirror
@pytest.mark.parametrize("example", ["ip-mode", "instance-mode", "blue-green"])
def test_example_validates(workdir, example):
    init(workdir / "examples" / example)
    tf(["validate"], workdir / "examples" / example)
