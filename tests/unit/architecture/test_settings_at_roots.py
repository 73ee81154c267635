"""Settings are read once, at the composition roots (CLI, worker and sink entry points), and passed in.

Nothing under streams/audit, streams/kafka, streams/worker or streams/ops.py reads the environment: no
``config.load()``, no ``Settings.from_env``, no ``os.environ`` / ``os.getenv``. The client SDK (streams/client)
may still take its defaults from the environment, as SDKs do.

The libraries the CLI calls (streams/bench, streams/demo, streams/devservices) take their Settings from the
command too: they read no settings (``config.load()``, ``from_env``). They may build the environment of the
processes they start (``os.environ``), and a module's ``if __name__ == "__main__":`` block, the entry point of
such a process (the benchmarks' echo server, pass-through and relay), reads its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

import streams

ROOT = Path(streams.__file__).resolve().parent
#: Runtime code that must be handed its Settings.
NO_ENV = ("audit", "kafka", "worker", "ops.py")
#: Still reading the settings themselves: none (issue 27 part 3 done). Never grow this set.
PENDING: set[str] = set()
#: Libraries of the CLI: handed their Settings, free to set up their child processes' environment.
NO_SETTINGS = ("bench", "demo", "devservices")


def env_reads(source: str, *, settings_only: bool = False) -> list[str]:
    """Each place ``source`` reads the environment: ``config.load()``, ``Settings.from_env``, ``os.environ``,
    ``os.getenv`` (also ``from os import environ``), as "line: what". ``settings_only``: only the settings reads
    (``config.load()``, ``from_env``, ``from streams.config import load``) outside the module's
    ``if __name__ == "__main__":`` blocks."""
    tree = ast.parse(source)
    found: list[tuple[int, str]] = []
    for node in _outside_main(tree) if settings_only else ast.walk(tree):
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
        if what and not (settings_only and what.startswith(("os.", "from os "))):
            found.append((node.lineno, what))
    return [f"{line}: {what}" for line, what in sorted(found)]


def _outside_main(tree: ast.Module) -> list[ast.AST]:
    """Every node of ``tree`` but those in its top-level ``if __name__ == "__main__":`` blocks."""
    def is_main(stmt: ast.stmt) -> bool:
        test = stmt.test if isinstance(stmt, ast.If) else None
        while isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):  # `... == "__main__" and ...`
            test = test.values[0]
        return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
                and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators))

    return [n for stmt in tree.body if not is_main(stmt) for n in ast.walk(stmt)]


def _files(names: tuple[str, ...] = NO_ENV) -> list[Path]:
    out: list[Path] = []
    for name in names:
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


def test_the_cli_libraries_are_handed_their_settings() -> None:
    offenders = {
        path.relative_to(ROOT).as_posix(): reads
        for path in _files(NO_SETTINGS)
        if (reads := env_reads(path.read_text(), settings_only=True))
    }
    assert not offenders, f"take the Settings from the command (streams/cli) as a parameter: {offenders}"


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


def test_the_settings_scanner_leaves_child_environments_and_main_blocks_alone() -> None:
    src = (
        "import os, sys\nfrom streams import config\n"
        "def f():\n    os.environ.update({'X': '1'})\n    return config.load()\n"
        "if __name__ == '__main__' and len(sys.argv) == 2:\n    run(config.load())\n"
        "if __name__ == '__main__':\n    run(config.Settings.from_env())\n"
    )
    assert env_reads(src, settings_only=True) == ["5: config.load"]
    assert len(env_reads(src)) == 4
