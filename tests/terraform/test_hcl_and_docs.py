"""Every .tf file parses (python-hcl2); the module's interface is documented and used correctly."""

import pathlib
import re

import hcl2
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
MODULE = REPO / "terraform"
EXAMPLES = REPO / "examples"
TF_FILES = sorted(
    p for root in (MODULE, EXAMPLES) for p in root.rglob("*.tf") if ".terraform" not in p.parts
)


def unquote(v):
    if isinstance(v, str) and len(v) >= 2 and v[0] == v[-1] == '"':
        return v[1:-1]
    return v


def load(path: pathlib.Path) -> dict:
    with path.open() as f:
        return hcl2.load(f)


def blocks(path: pathlib.Path, kind: str) -> dict[str, dict]:
    """Top-level `variable`/`output`/`module` blocks by name."""
    out = {}
    for block in load(path).get(kind, []):
        for name, body in block.items():
            out[unquote(name)] = body
    return out


def module_blocks(kind: str) -> dict[str, dict]:
    out = {}
    for tf in sorted(MODULE.glob("*.tf")):
        out.update(blocks(tf, kind))
    return out


def test_tf_files_found():
    names = {p.name for p in MODULE.glob("*.tf")}
    assert {"variables.tf", "main.tf", "outputs.tf", "versions.tf"} <= names
    assert (MODULE / "README.md").is_file()
    for example in ("ip-mode", "instance-mode", "blue-green"):
        assert (EXAMPLES / example / "main.tf").is_file()
        assert (EXAMPLES / example / "README.md").is_file()


@pytest.mark.parametrize("path", TF_FILES, ids=[str(p.relative_to(REPO)) for p in TF_FILES])
def test_tf_parses(path):
    doc = load(path)
    assert doc, f"{path} parsed to nothing"


def test_variables_and_outputs_have_descriptions():
    for kind in ("variable", "output"):
        for name, body in module_blocks(kind).items():
            assert unquote(body.get("description", "")).strip(), f"{kind} {name} has no description"


def test_readme_documents_every_input_and_output():
    readme = (MODULE / "README.md").read_text()
    documented = set(re.findall(r"^\|\s*`([a-z0-9_]+)`\s*\|", readme, re.M))
    for kind in ("variable", "output"):
        names = set(module_blocks(kind))
        assert names <= documented, f"README.md lacks {kind}s: {sorted(names - documented)}"
    stale = documented - set(module_blocks("variable")) - set(module_blocks("output"))
    assert not stale, f"README.md documents names the module does not have: {sorted(stale)}"


def required_variables() -> set[str]:
    return {n for n, b in module_blocks("variable").items() if "default" not in b}


@pytest.mark.parametrize("example", ["ip-mode", "instance-mode", "blue-green"])
def test_examples_call_the_module_with_known_inputs(example):
    calls = blocks(EXAMPLES / example / "main.tf", "module")
    assert calls, f"{example} does not use the module"
    variables = set(module_blocks("variable"))
    outputs = set(module_blocks("output"))
    text = (EXAMPLES / example / "main.tf").read_text()
    for name, body in calls.items():
        assert unquote(body["source"]) == "../../terraform"
        args = {k for k in body if not k.startswith("__")} - {"source"}
        assert args <= variables, f"{example}: unknown inputs {sorted(args - variables)}"
        assert required_variables() <= args, f"{example}: missing inputs {sorted(required_variables() - args)}"
        used = set(re.findall(rf"module\.{name}\.([a-z0-9_]+)", text))
        assert used <= outputs, f"{example}: unknown outputs {sorted(used - outputs)}"
