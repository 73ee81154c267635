"""Settings are read once, at the composition roots (CLI, worker and sink entry points), and passed in.

Nothing under streams/audit, streams/kafka, streams/worker or streams/ops.py reads the environment: no
``config.load()``, no ``Settings.from_env``, no ``os.environ`` / ``os.getenv``. The client SDK (streams/client)
may still take its defaults from the environment, as SDKs do.
"""

from __future__ import annotations

import ast
from pathlib import Path

import streams

ROOT = Path(streams.__file__).resolve().parent
#: Runtime code that must be handed its Settings.
NO_ENV = ("audit", "kafka", "worker", "ops.py")
#: Still reading the settings themselves (issue 27 part 3, not done yet): ClickHouse connect() (its URL and
#: role logins). Shrink this list; never grow it.
PENDING = {"audit/store.py"}


def env_reads(source: str) -> list[str]:
    """Each place ``source`` reads the environment: ``config.load()``, ``Settings.from_env``, ``os.environ``,
    ``os.getenv`` (also ``from os import environ``), as "line: what"."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        what = ""
        if isinstance(node, ast.Attribute):
            base = node.value.id if isinstance(node.value, ast.Name) else ""
            if (base, node.attr) in {("config", "load"), ("os", "environ"), ("os", "getenv"), ("os", "putenv")}:
                what = f"{base}.{node.attr}"
            elif node.attr in ("from_env", "from_env_explained"):
                what = node.attr
        elif isinstance(node, ast.ImportFrom) and node.module in ("os", "streams.config"):
            names = {a.name for a in node.names} & {"environ", "getenv", "load"}
            what = ", ".join(sorted(f"from {node.module} import {n}" for n in names))
        if what:
            found.append((node.lineno, what))
    return [f"{line}: {what}" for line, what in sorted(found)]


def _files() -> list[Path]:
    out: list[Path] = []
    for name in NO_ENV:
        path = ROOT / name
        out += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return out


def test_runtime_code_never_reads_the_environment() -> None:
    offenders = {
        rel: reads
        for path in _files()
        if (rel := path.relative_to(ROOT).as_posix()) not in PENDING and (reads := env_reads(path.read_text()))
    }
    assert not offenders, (
        f"read the settings at the entry point and pass them in (Settings or the value itself): {offenders}"
    )


def test_the_pending_list_only_names_files_that_still_need_it() -> None:
    done = [rel for rel in PENDING if not env_reads((ROOT / rel).read_text())]
    assert not done, f"{done} no longer read the environment: remove them from PENDING"


def test_the_scanner_finds_every_kind_of_read() -> None:
    src = (
        "import os\nfrom streams import config\n"
        "a = config.load()\nb = os.environ['X']\nc = os.getenv('Y')\nd = config.Settings.from_env()\n"
        "from os import environ\n"
    )
    assert [r.split(": ")[1] for r in env_reads(src)] == [
        "config.load", "os.environ", "os.getenv", "from_env", "from os import environ"
    ]
    assert env_reads("def f(cfg):\n    return cfg.kafka_bootstrap\n") == []
