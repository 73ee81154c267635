"""The wheel carries everything the runtime reads, and the schemas have one copy: schemas/.

pyproject.toml lists the packages (the schemas package is mapped with package-dir, which `find` cannot do)
and the package-data patterns; these tests fail when a new package or data file is not listed. The install
test (tests/integration/test_install.py) builds the wheel and runs pdx from it, outside the checkout.
"""

from __future__ import annotations

import tomllib
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest

from streams import config
from streams.cli.main import main as pdx_main
from streams.contracts import SCHEMAS_PACKAGE, schema_dir, wire
from streams.errors import UserError

ROOT = config.REPO_ROOT
PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SETUPTOOLS: dict[str, Any] = PYPROJECT["tool"]["setuptools"]


def _data_files(top: Path) -> list[Path]:
    """Every file under ``top`` that is not Python source or a cache."""
    return sorted(
        p for p in top.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    )


def _covered(relative: str, patterns: list[str]) -> bool:
    """Whether a package-data glob (``*`` does not cross ``/``) matches ``relative``."""
    parts = relative.split("/")
    return any(
        len(parts) == len(pattern.split("/")) and all(map(fnmatchcase, parts, pattern.split("/")))
        for pattern in patterns
    )


def test_schemas_package_is_the_top_level_schemas_dir() -> None:
    assert SETUPTOOLS["package-dir"] == {SCHEMAS_PACKAGE: "schemas"}
    assert SCHEMAS_PACKAGE in SETUPTOOLS["packages"]
    assert (ROOT / "schemas" / "__init__.py").is_file()  # a regular package: an editable install finds it


def test_packaged_schemas_equal_schemas_dir_byte_for_byte() -> None:
    source = {p.name: p.read_bytes() for p in (ROOT / "schemas").iterdir() if p.is_file()}
    packaged = {p.name: p.read_bytes() for p in schema_dir().iterdir() if p.is_file() and not p.name.endswith(".pyc")}
    assert packaged == source
    assert set(wire.SCHEMA_FILES.values()) <= set(packaged)


def test_every_package_is_listed() -> None:
    """What `find` would find (every directory under streams/, as namespace packages), plus the schemas."""
    found = {
        ".".join(d.relative_to(ROOT).parts)
        for d in [ROOT / "streams", *(ROOT / "streams").rglob("*")]
        if d.is_dir() and d.name != "__pycache__" and not d.name.startswith(".")
    }
    listed = set(SETUPTOOLS["packages"])
    assert sorted(found - listed) == [], "add these packages to [tool.setuptools] packages in pyproject.toml"
    assert sorted(listed - found - {SCHEMAS_PACKAGE}) == [], "pyproject.toml lists packages that do not exist"


@pytest.mark.parametrize(
    ("package", "top"), [("streams", ROOT / "streams"), (SCHEMAS_PACKAGE, ROOT / "schemas")], ids=["streams", "schemas"]
)
def test_every_data_file_is_package_data(package: str, top: Path) -> None:
    patterns = SETUPTOOLS["package-data"][package]
    relative = [p.relative_to(top).as_posix() for p in _data_files(top)]
    missing = [name for name in relative if not _covered(name, patterns)]
    assert missing == [], f"add to [tool.setuptools.package-data] {package} in pyproject.toml"


def test_license_is_an_spdx_expression_and_the_backend_supports_it() -> None:
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert any(req.replace(" ", "") == "setuptools>=77" for req in PYPROJECT["build-system"]["requires"])


def test_crc64_avro_is_fastavros() -> None:
    from fastavro.schema import fingerprint

    for text in ("", '"null"', wire.canonical_form("AuditRecord")):
        assert wire.crc64_avro(text.encode()).to_bytes(8, "little").hex() == fingerprint(text, "CRC-64-AVRO")


# ---- defaults that live in a checkout (policies/, examples/) ---------------------------------------------


def test_in_the_checkout_defaults_are_the_checkouts() -> None:
    assert config.checkout_root() == ROOT
    assert config.default_policies_dir() == ROOT / "policies" == config.POLICIES_DIR
    assert config.demo_inventory_file() == ROOT / "examples" / "inventory.yaml"
    assert config.require_policies_dir("pdx demo") == ROOT / "policies"


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """As if pdx were installed (no checkout next to the package), run from an empty directory."""
    site = tmp_path / "site-packages"
    (site / "streams").mkdir(parents=True)
    monkeypatch.setattr(config, "REPO_ROOT", site)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_installed_there_is_no_checkout_and_no_default(installed: Path) -> None:
    assert config.checkout_root() is None
    assert config.default_policies_dir() is None
    assert config.demo_inventory_file() is None
    with pytest.raises(UserError, match=r"^pdx demo needs policies/ .*run it from a pdx checkout"):
        config.require_policies_dir("pdx demo")
    with pytest.raises(UserError, match=r"^pdx demo needs examples/inventory.yaml "):
        config.require_demo_inventory("pdx demo")


def test_installed_the_current_directory_provides_them(installed: Path) -> None:
    (installed / "policies").mkdir()
    (installed / "examples").mkdir()
    (installed / "examples" / "inventory.yaml").write_text("identities: []\n")
    assert config.default_policies_dir() == Path("policies")
    assert config.demo_inventory_file() == Path("examples/inventory.yaml")


def test_installed_policy_validate_without_dir_says_to_pass_one(
    installed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert pdx_main(["policy", "validate"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "pdx: no policy directory given and ./policies does not exist: pass DIR "
        "(e.g. pdx policy validate path/to/policies)\n"
    )


def test_installed_policy_validate_with_dir_works(installed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = installed / "mine"
    copy.mkdir()
    for f in (ROOT / "policies").glob("*.yaml"):
        (copy / f.name).write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
    assert pdx_main(["policy", "validate", str(copy)]) == 0
    assert capsys.readouterr().out.startswith("ok: ")
