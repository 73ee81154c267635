"""The folder tree is the architecture: these rules are checked by reading every import in streams/.

* Runtime packages (model, contracts, policy, kafka, worker, audit, client) never import tooling (cli, demo,
  bench, devservices), nor ``streams.ops`` / ``streams.console`` which exist for tooling.
* No import cycles between modules, counting imports inside functions: a cycle hidden in a function body is
  still a cycle a reader has to untangle.
* The policy engine has no Kafka: nothing under streams.policy or streams.model imports aiokafka or faust.
* Only streams/kafka/clients.py builds aiokafka clients, and only streams/config.py reads PDX_* variables.
"""

from __future__ import annotations

import ast
from pathlib import Path

import streams

ROOT = Path(streams.__file__).resolve().parent
RUNTIME = ("model", "contracts", "policy", "kafka", "worker", "audit", "client")
TOOLING = ("cli", "demo", "bench", "devservices", "ops", "console")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


def _imports(path: Path, module: str, known: set[str]) -> set[str]:
    """Every streams module ``path`` imports (at top level or inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".") if is_package else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join([*pkg, base] if base else pkg)
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            if not name.startswith("streams"):
                continue
            # the deepest known module the name refers to (``from streams.model import Identity`` -> streams.model)
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                out.add(name)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {m: _imports(p, m, known) for m, p in modules.items()}


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_runtime_never_imports_tooling() -> None:
    bad = sorted(
        f"{m} imports {dep}"
        for m, deps in _graph().items()
        if _area(m) in RUNTIME
        for dep in deps
        if _area(dep) in TOOLING
    )
    assert bad == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _without_package_reexports(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's ``__init__`` re-exporting its own submodules is not a cycle with them."""
    return {
        m: {d for d in deps if not (m.endswith(tuple(RUNTIME + TOOLING)) and d.startswith(m + "."))}
        if Path(_modules()[m]).name == "__init__.py"
        else deps
        for m, deps in graph.items()
    }


def test_no_import_cycles() -> None:
    assert _cycles(_without_package_reexports(_graph())) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _third_party_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module.split(".")[0])
    return out


def test_policy_engine_and_model_have_no_kafka() -> None:
    bad = sorted(
        f"{m} imports {lib}"
        for m, p in _modules().items()
        if _area(m) in ("policy", "model")
        for lib in _third_party_imports(p) & {"aiokafka", "faust", "kafka"}
    )
    assert bad == []


def test_only_the_client_factory_builds_kafka_clients() -> None:
    constructors = ("AIOKafkaProducer(", "AIOKafkaConsumer(", "AIOKafkaAdminClient(", "AIOKafkaClient(", "faust.App(")
    bad = sorted(
        f"{m} calls {c[:-1]}"
        for m, p in _modules().items()
        if m not in ("streams.kafka.clients", "streams.worker.app")
        for c in constructors
        if c in p.read_text(encoding="utf-8")
    )
    assert bad == []


def test_only_config_reads_pdx_variables() -> None:
    reads = ("os.environ.get(", "os.getenv(", "os.environ[")
    bad = sorted(
        f"{m}: {line.strip()}"
        for m, p in _modules().items()
        if m != "streams.config"
        for line in p.read_text(encoding="utf-8").splitlines()
        if any(r in line for r in reads) and ("PDX_" in line or "ENV_" in line)
    )
    assert bad == []


def test_every_public_exception_has_the_one_root() -> None:
    import importlib
    import inspect

    from streams.errors import PdxError

    strays = sorted(
        f"{m}.{name}"
        for m in _modules()
        if not m.endswith("__main__")
        for name, obj in vars(importlib.import_module(m)).items()
        if inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and obj.__module__ == m
        and not name.startswith("_")
        and not issubclass(obj, PdxError)
    )
    assert strays == []
