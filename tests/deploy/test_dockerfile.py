"""deploy/Dockerfile, checked by reading (no Docker engine here)."""

import pathlib
import re
import tomllib

REPO = pathlib.Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile"
IGNORE = REPO / "deploy" / "Dockerfile.dockerignore"


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages():
    result, current = [], None
    for word, rest in instructions():
        if word == "FROM":
            current = {"from": rest, "body": []}
            result.append(current)
        elif current is not None:
            current["body"].append((word, rest))
    return result


def test_multi_stage_build_of_the_agent():
    s = stages()
    assert len(s) >= 2
    build = s[0]
    assert re.match(r"rust:\$\{RUST_VERSION\}-bookworm AS build$", build["from"]), build["from"]
    runs = " ".join(rest for word, rest in build["body"] if word == "RUN")
    assert "cargo build --release --locked -p tgb-agent" in runs


def test_toolchain_meets_rust_version():
    cargo = tomllib.loads((REPO / "Cargo.toml").read_text())
    need = tuple(int(x) for x in cargo["workspace"]["package"]["rust-version"].split("."))
    (arg,) = [rest for word, rest in instructions() if word == "ARG" and rest.startswith("RUST_VERSION=")]
    have = tuple(int(x) for x in arg.split("=", 1)[1].split("."))
    assert have >= need, f"Dockerfile Rust {have} < rust-version {need}"


def test_runtime_is_small_and_non_root():
    final = stages()[-1]
    assert final["from"].startswith("gcr.io/distroless/") and final["from"].endswith(":nonroot")
    body = dict(final["body"])
    assert body["USER"] == "65532:65532"
    assert body["ENTRYPOINT"] == '["/usr/local/bin/tgb-agent"]'
    assert body["CMD"] == '["run"]'
    assert "--from=build" in body["COPY"]
    assert set(body) <= {"COPY", "USER", "EXPOSE", "ENTRYPOINT", "CMD", "LABEL", "ENV"}, "no RUN in a distroless stage"


def test_context_keeps_what_cargo_needs():
    ignored = {l.strip() for l in IGNORE.read_text().splitlines() if l.strip() and not l.startswith("#")}
    assert {"target", ".git"} <= ignored
    cargo = tomllib.loads((REPO / "Cargo.toml").read_text())
    needed = {"Cargo.toml", "Cargo.lock", "src", *cargo["workspace"]["members"]} - {"."}
    for path in needed:
        top = path.split("/")[0]
        assert top not in ignored and path not in ignored, f"{path} is excluded from the build context"
