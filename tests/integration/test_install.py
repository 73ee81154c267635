"""A regular (non-editable) install works outside the source tree: the packaging bug of issue "pdx --help fails
after pip install .".

The steps are the Dockerfile's: copy what its COPY lines copy, build from that copy (without warnings), install
the wheel into a fresh virtualenv in a temporary directory, then run pdx from another directory. Dependencies
come from the package index (or pip's cache); the whole module takes about a minute.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streams import config

pytestmark = pytest.mark.integration

ROOT = config.REPO_ROOT
INSTALL_TIMEOUT_S = 600
NO_DIR_ERROR = (
    "pdx: no policy directory given and ./policies does not exist: pass DIR (e.g. pdx policy validate path/to/policies)"
)

ROUND_TRIP = """
import datetime as dt
from streams.contracts import wire
request = {
    "request_id": "r1", "occurred_at": dt.datetime(2026, 3, 1, 9, 30, 15, 123000, tzinfo=dt.UTC),
    "identity_id": "svc-billing", "action": "api:call", "resource": {"id": "api/x", "type": "api"},
    "context": {}, "reply_to": "pdx.decisions", "reply_partition": 0,
}
data = wire.encode("AccessRequest", request)
assert data[:10] == wire.MAGIC + wire.fingerprint("AccessRequest")
back = wire.decode_as("AccessRequest", data)
assert back["request_id"] == "r1" and back["occurred_at"] == request["occurred_at"], back
print(wire.__file__)
print(wire.fingerprint_hex("AccessRequest"))
"""


@dataclass
class Installed:
    venv: Path
    wheel: Path
    build_log: str
    elsewhere: Path  # an empty working directory outside the checkout

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return subprocess.run(
            [str(self.venv / "bin" / args[0]), *args[1:]], cwd=cwd or self.elsewhere, env=env,
            capture_output=True, text=True, timeout=120,
        )


def _docker_copy_sources() -> list[str]:
    """The paths the Dockerfile copies into the image before and after `pip install .`."""
    sources: list[str] = []
    for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if line.startswith("COPY "):
            sources += line.split()[1:-1]
    return sources


def _data_files(top: Path) -> list[str]:
    return sorted(
        p.relative_to(top).as_posix() for p in top.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    )


def _check(result: subprocess.CompletedProcess[str], what: str) -> None:
    assert result.returncode == 0, f"{what} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    tmp = tmp_path_factory.mktemp("install")
    assert not tmp.resolve().is_relative_to(ROOT.resolve()), "the install test must run outside the checkout"
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^RUN pip install --no-cache-dir \. ", dockerfile, re.M), "the Dockerfile installs with pip"

    app = tmp / "app"  # the image's /app
    app.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    for source in _docker_copy_sources():
        src = ROOT / source
        if src.is_dir():
            shutil.copytree(src, app / source, ignore=ignore)
        else:
            shutil.copy2(src, app / source)

    # PYTHONDONTWRITEBYTECODE (set on some machines) only makes distutils say it skips byte-compiling.
    build_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    dist = tmp / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--verbose", "--wheel-dir", str(dist)],
        cwd=app, env=build_env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
    )
    _check(build, "building the wheel")
    (wheel,) = dist.glob("pdx-*.whl")

    venv = tmp / "venv"
    _check(subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=120),
           "creating the virtualenv")
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
        cwd=tmp, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
    )
    _check(install, "pip install of the wheel")
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    yield Installed(venv, wheel, build.stdout + build.stderr, elsewhere)


def test_the_build_prints_no_warnings(installed: Installed) -> None:
    warnings = [line for line in installed.build_log.splitlines() if re.search(r"warn|deprecat", line, re.I)]
    assert warnings == [], "\n".join(warnings)


def test_the_wheel_carries_every_data_file_and_the_schemas_as_they_are(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as whl:
        names = set(whl.namelist())
        missing = [f"streams/{name}" for name in _data_files(ROOT / "streams") if f"streams/{name}" not in names]
        assert missing == []
        for schema in sorted((ROOT / "schemas").iterdir()):
            if schema.is_file():
                packaged = whl.read(f"streams/contracts/schemas/{schema.name}")
                assert packaged == schema.read_bytes(), f"{schema.name} differs in the wheel"
        assert not [n for n in names if n.startswith(("schemas/", "policies/", "examples/", "tests/"))]


def test_it_is_a_regular_install_outside_the_checkout(installed: Installed) -> None:
    where = installed.run("python", "-c", "import streams; print(streams.__file__)")
    _check(where, "import streams")
    location = Path(where.stdout.strip()).resolve()
    assert location.is_relative_to(installed.venv.resolve()), location
    assert not list((installed.venv / "lib").glob("python*/site-packages/__editable__*"))


def test_pdx_help(installed: Installed) -> None:
    result = installed.run("pdx", "--help")
    _check(result, "pdx --help")
    assert "policy" in result.stdout


def test_policy_validate_a_directory(installed: Installed) -> None:
    mine = installed.elsewhere.parent / "my-policies"
    mine.mkdir(exist_ok=True)
    for f in (ROOT / "policies").glob("*.yaml"):
        shutil.copy2(f, mine / f.name)
    result = installed.run("pdx", "policy", "validate", str(mine))
    _check(result, "pdx policy validate DIR")
    assert result.stdout.startswith("ok: ") and str(mine) in result.stdout


def test_policy_validate_without_a_directory_says_to_pass_one(installed: Installed) -> None:
    result = installed.run("pdx", "policy", "validate")
    assert (result.returncode, result.stderr.strip()) == (2, NO_DIR_ERROR), result.stderr


def test_policy_validate_finds_policies_in_the_working_directory(installed: Installed) -> None:
    """As in the image: /app holds policies/, and `pdx policy validate` run there uses it."""
    app = installed.elsewhere.parent / "app"
    result = installed.run("pdx", "policy", "validate", cwd=app)
    _check(result, "pdx policy validate in a directory holding policies/")
    assert result.stdout.startswith("ok: ") and "in policies;" in result.stdout


def test_wire_round_trip_uses_the_packaged_schemas(installed: Installed) -> None:
    result = installed.run("python", "-c", ROUND_TRIP)
    _check(result, "the wire round trip")
    module, fingerprint = result.stdout.split()
    assert Path(module).resolve().is_relative_to(installed.venv.resolve())
    from streams.contracts import wire

    assert fingerprint == wire.fingerprint_hex("AccessRequest")  # the checkout's schemas, byte for byte
