"""`pdx dev`: a real Apache Kafka (KRaft) and a real ClickHouse server as local background processes.

State lives under a state dir (default ``.pdx/``): ``state.json`` (ports), and per service a pid file, a
log file and a data dir. ``pdx dev up --brokers 3`` runs Kafka as a cluster of combined broker+controller nodes
(node ids 1..N, one static KRaft quorum of all N voters, ``controller.quorum.voters``): node 1 keeps the single node's
ports, pid file and log (``kafka/kafka.pid``), nodes 2..N live under ``kafka/node-N/``, and every node of a
cluster has its own data dir ``kafka/node-N/data`` (a single node's ``kafka/data`` is never reused by a cluster:
its metadata log names another quorum). Kafka's jars come from Maven Central via ``kafka-pom.xml`` and are cached under
``~/.cache/pdx`` (``PDX_CACHE_DIR``), so only the first ``up`` on a machine pays for resolving them.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from streams import config
from streams.console import say, step
from streams.devservices import chusers, procs, secure
from streams.errors import UserError
from streams.kafka.health import kafka_health

SERVICES = ("kafka", "clickhouse")
KAFKA_HEALTH_TIMEOUT_S = 90.0
#: most brokers `pdx dev up --brokers N` runs (each is a JVM; 3 is what a replicated dev cluster needs)
MAX_BROKERS = 5
#: JVM heap of one broker: one node may take a gigabyte, a cluster's nodes share the machine
SINGLE_HEAP = ("-Xms256m", "-Xmx1g")
CLUSTER_HEAP = ("-Xms128m", "-Xmx512m")
CLICKHOUSE_HEALTH_TIMEOUT_S = 60.0


@dataclass
class Ports:
    """The ports of one stack. ``kafka`` / ``kafka_controller`` are node 1's; ``more_brokers`` holds the
    (client, controller) ports of nodes 2..N of a multi-broker cluster (empty: one node, as always)."""

    kafka: int
    kafka_controller: int
    clickhouse_http: int
    clickhouse_tcp: int
    more_brokers: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.more_brokers = [(int(a), int(b)) for a, b in self.more_brokers]  # JSON gives lists

    @classmethod
    def from_settings(cls, s: config.Settings) -> Ports:
        return cls(s.kafka_port, s.kafka_controller_port, s.clickhouse_http_port, s.clickhouse_tcp_port)

    @classmethod
    def free(cls, brokers: int = 1) -> Ports:
        return cls(procs.free_port(), procs.free_port(), procs.free_port(), procs.free_port()).with_brokers(brokers)

    @property
    def brokers(self) -> int:
        return 1 + len(self.more_brokers)

    def with_brokers(self, brokers: int) -> Ports:
        """These ports for a Kafka of ``brokers`` nodes: node 1 keeps its ports, nodes beyond the ones already
        known get free ports, nodes beyond ``brokers`` are dropped."""
        if not 1 <= brokers <= MAX_BROKERS:
            raise UserError(f"--brokers {brokers}: choose between 1 and {MAX_BROKERS} (3 for a replicated cluster)")
        more = self.more_brokers[: brokers - 1]
        while len(more) < brokers - 1:
            more.append((procs.free_port(), procs.free_port()))
        return Ports(self.kafka, self.kafka_controller, self.clickhouse_http, self.clickhouse_tcp, more)

    def kafka_nodes(self) -> list[tuple[int, int, int]]:
        """(node id, client port, controller port) of every Kafka node, node 1 first."""
        return [(1, self.kafka, self.kafka_controller)] + [
            (i + 2, port, controller) for i, (port, controller) in enumerate(self.more_brokers)
        ]

    @property
    def bootstrap(self) -> str:
        """Every broker's address: a client still finds the cluster when one broker is gone."""
        return ",".join(f"127.0.0.1:{port}" for _, port, _ in self.kafka_nodes())

    def env(self) -> dict[str, str]:
        """Environment variables that point pdx at these ports."""
        return {
            config.ENV_KAFKA_BOOTSTRAP: self.bootstrap,
            config.ENV_CLICKHOUSE_URL: f"http://127.0.0.1:{self.clickhouse_http}",
            config.ENV_KAFKA_PORT: str(self.kafka),
            config.ENV_KAFKA_CONTROLLER_PORT: str(self.kafka_controller),
            config.ENV_CLICKHOUSE_HTTP_PORT: str(self.clickhouse_http),
            config.ENV_CLICKHOUSE_TCP_PORT: str(self.clickhouse_tcp),
        }


class DevStack:
    """The local services under one state dir."""

    def __init__(self, state_dir: Path, settings: config.Settings) -> None:
        self.state_dir = state_dir.resolve()
        self.state_file = self.state_dir / "state.json"
        #: the Settings the entry point read (the dev commands, the demo, the benchmarks, the tests)
        self.settings = settings

    # ---- state ---------------------------------------------------------------------------------
    def saved_ports(self) -> Ports | None:
        try:
            return Ports(**json.loads(self.state_file.read_text())["ports"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save_ports(self, ports: Ports, secure_mode: bool | None = None) -> None:
        """Record the ports (and whether Kafka runs in secure mode; None keeps what was recorded)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        mode = self.secure_mode if secure_mode is None else secure_mode
        self.state_file.write_text(json.dumps({"ports": asdict(ports), "secure": mode}, indent=2) + "\n")

    @property
    def secure_mode(self) -> bool:
        """Whether Kafka was last started with ``--secure`` (SASL_SSL, SCRAM, ACLs), as state.json says."""
        try:
            return bool(json.loads(self.state_file.read_text()).get("secure", False))
        except (OSError, ValueError, AttributeError):
            return False

    @property
    def secure_files(self) -> secure.SecureFiles:
        return secure.secure_files(self.state_dir)

    def kafka_security(self, principal: str = secure.ADMIN) -> config.KafkaSecurity:
        """How a client reaches this stack's Kafka as ``principal`` (plaintext unless in secure mode)."""
        return secure.security(self.secure_files, principal) if self.secure_mode else config.KafkaSecurity()

    def env(self, ports: Ports | None = None, principal: str | None = None) -> dict[str, str]:
        """Variables pointing pdx at this stack: ports, the ClickHouse credentials file and, in secure mode, the
        Kafka login of ``principal`` (default pdx-admin)."""
        out = (ports or self.ports()).env()
        if chusers.credentials_path(self.state_dir).exists():
            out[config.ENV_CLICKHOUSE_CREDENTIALS] = str(chusers.credentials_path(self.state_dir))
        if self.secure_mode:
            out.update(secure.security_env(self.kafka_security(principal or secure.ADMIN)))
        elif principal:
            raise UserError("--principal needs a secure stack: start it with `pdx dev up --secure`")
        return out

    def ports(self) -> Ports:
        return self.saved_ports() or Ports.from_settings(self.settings)

    def service_dir(self, name: str) -> Path:
        return self.state_dir / name

    def pid_file(self, name: str) -> Path:
        return self.service_dir(name) / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.service_dir(name) / f"{name}.log"

    def running_pid(self, name: str) -> int | None:
        """The pid of the service's process (Kafka: node 1's, see :meth:`kafka_pids` for a cluster's nodes)."""
        return procs.read_pid(self.pid_file(name))

    # ---- kafka nodes ---------------------------------------------------------------------------
    def node_dir(self, node: int) -> Path:
        """Where a cluster node keeps its server.properties and data (nodes 2..N also their pid file and log)."""
        return self.service_dir("kafka") / f"node-{node}"

    def node_pid_file(self, node: int) -> Path:
        return self.pid_file("kafka") if node == 1 else self.node_dir(node) / "kafka.pid"

    def node_log_file(self, node: int) -> Path:
        return self.log_file("kafka") if node == 1 else self.node_dir(node) / "kafka.log"

    def kafka_pids(self, ports: Ports | None = None) -> dict[int, int | None]:
        """{node id: pid, or None when that node is not running} of this stack's Kafka nodes."""
        ports = ports or self.ports()
        return {node: procs.read_pid(self.node_pid_file(node)) for node, _, _ in ports.kafka_nodes()}

    def kill_broker(self, node: int) -> int | None:
        """SIGKILL one Kafka node at once (a crash: no controlled shutdown; fault tests and benchmarks). Returns
        the pid killed, None if that node was not running. ``start_service("kafka")`` starts it again."""
        return procs.kill_now(self.node_pid_file(node))

    # ---- health --------------------------------------------------------------------------------
    def health(self, name: str, ports: Ports | None = None) -> tuple[bool, str]:
        """(healthy, detail). Kafka is healthy when a metadata request lists all of its brokers."""
        ports = ports or self.ports()
        if name == "kafka":
            return kafka_health(
                self.settings.replace(kafka_bootstrap=ports.bootstrap, kafka_security=self.kafka_security()),
                expect_brokers=ports.brokers,
            )
        return clickhouse_health(f"http://127.0.0.1:{ports.clickhouse_http}")

    # ---- up / down -----------------------------------------------------------------------------
    def up(
        self, names: tuple[str, ...], requested: Ports, *, secure_mode: bool = False, brokers: int | None = None
    ) -> Ports:
        """Start the named services that are not running; return the ports in use. ``secure_mode``: Kafka with
        SASL_SSL (SCRAM-SHA-512), the dev CA and ACLs (see streams/devservices/secure.py). ``brokers``: Kafka
        nodes (None: as many as ``requested`` has, or as the Kafka already running has). A cluster some of whose
        nodes are down gets those nodes started again, on their ports."""
        saved = self.saved_ports()
        kafka_up = saved is not None and any(p is not None for p in self.kafka_pids(saved).values())
        running = {n for n in SERVICES if self.running_pid(n) is not None}
        if kafka_up:
            running.add("kafka")
        if "kafka" in names and "kafka" in running and self.secure_mode != secure_mode:
            raise UserError(
                f"Kafka already runs in {'secure' if self.secure_mode else 'plaintext'} mode from {self.state_dir}: "
                "stop it first (`pdx dev down kafka`)"
            )
        if "kafka" in names and kafka_up and saved and brokers is not None and brokers != saved.brokers:
            raise UserError(
                f"Kafka already runs with {saved.brokers} broker(s) from {self.state_dir}, not {brokers}: "
                f"stop it first (`pdx dev down kafka`), then `pdx dev up --brokers {brokers}`"
            )
        if brokers is not None:
            requested = requested.with_brokers(brokers)
        if secure_mode and "kafka" in names and not kafka_up and requested.brokers > 1:
            raise UserError(
                "--secure runs one broker only: use `pdx dev up --secure` or `pdx dev up --brokers "
                f"{requested.brokers}`, not both"
            )
        # Services already running keep their ports; the others take the requested ones.
        ports = requested
        if saved and running:
            kafka_ports = saved if "kafka" in running else requested
            ch_ports = saved if "clickhouse" in running else requested
            ports = Ports(
                kafka=kafka_ports.kafka,
                kafka_controller=kafka_ports.kafka_controller,
                clickhouse_http=ch_ports.clickhouse_http,
                clickhouse_tcp=ch_ports.clickhouse_tcp,
                more_brokers=list(kafka_ports.more_brokers),
            )
        for name in names:
            if name == "kafka" and kafka_up:
                down = [n for n, pid in self.kafka_pids(ports).items() if pid is None]
                if down:
                    say(f"kafka: node(s) {', '.join(map(str, down))} of {ports.brokers} not running: starting them")
                    self._start_cluster(ports, down)
                    continue
            if name in running:
                ok, detail = self.health(name, ports)
                say(
                    f"{name}: already running (pid {self.running_pid(name)}){'' if ok else ' but unhealthy: ' + detail}"
                )
                continue
            if name == "kafka":
                self.save_ports(ports, secure_mode)  # health checks read the mode
                if ports.brokers > 1:
                    self._start_cluster(ports, [n for n, _, _ in ports.kafka_nodes()])
                else:
                    self._start_kafka(ports, secure_mode)
            else:
                self._start_clickhouse(ports)
            self.save_ports(ports)
        return ports

    def down(self, names: tuple[str, ...]) -> list[str]:
        """Stop the named services; stopping Kafka also stops the pdx workers started from this state dir."""
        stopped = []
        if "kafka" in names:
            for pid_file in sorted((self.state_dir / "workers").glob("*.pid")):
                if procs.stop(pid_file, timeout=30):
                    stopped.append(f"worker {pid_file.stem}")
        for name in names:
            if name == "kafka" and self.ports().brokers > 1:
                nodes = self._stop_kafka_nodes(timeout=30)
                if nodes:
                    stopped.append(f"kafka (node{'s' if len(nodes) > 1 else ''} {', '.join(map(str, nodes))})")
            elif procs.stop(self.pid_file(name)):
                stopped.append(name)
        return stopped

    def _stop_kafka_nodes(self, timeout: float) -> list[int]:
        """SIGTERM every node of the cluster at once and wait for all (one by one, the last nodes would wait for
        a quorum that is already gone); the node ids that were running."""
        ports = self.ports()
        files = {node: self.node_pid_file(node) for node, _, _ in ports.kafka_nodes()}
        stopped = procs.stop_all(list(files.values()), timeout)
        return [node for node, was_running in zip(files, stopped, strict=True) if was_running]

    def stop_service(self, name: str) -> bool:
        """Stop only the named service's process (SIGTERM, SIGKILL after the timeout), leaving the pdx workers and
        sinks running and the data dir as it is (fault benchmarks: a broker restart, a ClickHouse outage). For a
        Kafka cluster, every node. True if it was running."""
        if name == "kafka" and self.ports().brokers > 1:
            return bool(self._stop_kafka_nodes(timeout=30))
        return procs.stop(self.pid_file(name), timeout=30)

    def start_service(self, name: str) -> Ports:
        """Start the named service again on the ports it last used, with the same data dir; no-op when running."""
        return self.up((name,), self.saved_ports() or self.ports(), secure_mode=self.secure_mode)

    # ---- kafka ---------------------------------------------------------------------------------
    def _start_kafka(self, ports: Ports, secure_mode: bool = False) -> None:
        _check_ports("kafka", (ports.kafka, ports.kafka_controller))
        java = find_java()
        lib = ensure_kafka_jars(self.settings.cache_dir)
        home = self.service_dir("kafka")
        # secure mode has its own log dir: its storage is formatted with the SCRAM credentials
        data = home / ("data-secure" if secure_mode else "data")
        home.mkdir(parents=True, exist_ok=True)
        properties = home / "server.properties"
        scram: list[str] = []
        if secure_mode:
            files = secure.ensure_all(self.state_dir)
            text = _kafka_properties(ports, data, secure.broker_properties(files, ports.kafka, ports.kafka_controller))
            secure.write_private(properties, text)  # holds the broker's SCRAM password and key
            scram = secure.scram_format_args(files)
        else:
            properties.write_text(_kafka_properties(ports, data))
        log4j = home / "log4j2.properties"
        log4j.write_text(_KAFKA_LOG4J)
        classpath = f"{lib}/*"
        jvm = [java, *SINGLE_HEAP, "-XX:+UseG1GC", f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath]
        if not (data / "meta.properties").exists():
            cluster_id_file = home / "cluster_id"
            if not cluster_id_file.exists():
                cluster_id_file.write_text(new_cluster_id() + "\n")
            with step("Formatting Kafka storage (first start)"):
                _run_or_fail(
                    [
                        *jvm,
                        "kafka.tools.StorageTool",
                        "format",
                        f"--cluster-id={cluster_id_file.read_text().strip()}",
                        "-c",
                        str(properties),
                        "--ignore-formatted",
                        *scram,
                    ],
                    f"formatting Kafka storage in {data} failed",
                )
        log = self.log_file("kafka")
        procs.spawn([*jvm, "kafka.Kafka", str(properties)], cwd=home, log_file=log, pid_file=self.pid_file("kafka"))
        mode = " (SASL_SSL, SCRAM-SHA-512, ACLs)" if secure_mode else ""
        with step(f"Starting Kafka {config.KAFKA_VERSION} on 127.0.0.1:{ports.kafka}{mode}"):
            self._wait_healthy("kafka", ports, KAFKA_HEALTH_TIMEOUT_S)
        if secure_mode:
            with step("Setting the pdx principals' ACLs"):
                self._apply_acls(java, lib, ports)

    def _start_cluster(self, ports: Ports, nodes: list[int]) -> None:
        """Start the given nodes of a multi-broker cluster (all of them, or the ones that died), formatting their
        storage first if needed. Why in parallel: each JVM takes seconds to start on a small machine, and the
        quorum forms only once a majority of the voters is up."""
        nodes_ports = {node: (port, controller) for node, port, controller in ports.kafka_nodes()}
        _check_ports("kafka", tuple(p for n in nodes for p in nodes_ports[n]))
        java = find_java()
        lib = ensure_kafka_jars(self.settings.cache_dir)
        home = self.service_dir("kafka")
        home.mkdir(parents=True, exist_ok=True)
        log4j = home / "log4j2.properties"
        log4j.write_text(_KAFKA_LOG4J)
        jvm = [java, *CLUSTER_HEAP, "-XX:+UseG1GC", f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{lib}/*"]
        cluster_id_file = home / "cluster_id"
        if not cluster_id_file.exists():
            cluster_id_file.write_text(new_cluster_id() + "\n")
        cluster_id = cluster_id_file.read_text().strip()
        to_format: list[list[str]] = []
        for node in nodes:
            data = self.node_dir(node) / "data"
            self.node_dir(node).mkdir(parents=True, exist_ok=True)
            properties = self.node_dir(node) / "server.properties"
            properties.write_text(_cluster_properties(ports, node, data))
            if not (data / "meta.properties").exists():
                to_format.append([*jvm, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c",
                                  str(properties), "--ignore-formatted"])
        if to_format:
            with step(f"Formatting Kafka storage of {len(to_format)} node(s) (first start)"):
                with concurrent.futures.ThreadPoolExecutor(len(to_format)) as pool:
                    for future in [pool.submit(_run_or_fail, cmd, f"formatting Kafka storage ({cmd[-3]}) failed")
                                   for cmd in to_format]:
                        future.result()
        for node in nodes:
            procs.spawn([*jvm, "kafka.Kafka", str(self.node_dir(node) / "server.properties")], cwd=self.node_dir(node),
                        log_file=self.node_log_file(node), pid_file=self.node_pid_file(node))
        with step(f"Starting Kafka {config.KAFKA_VERSION}: {ports.brokers} brokers at {ports.bootstrap}"):
            self._wait_cluster_healthy(ports, nodes, KAFKA_HEALTH_TIMEOUT_S)

    def _wait_cluster_healthy(self, ports: Ports, nodes: list[int], timeout: float) -> None:
        """Until a metadata request lists every broker of the cluster; a node that exits fails at once."""
        deadline = time.monotonic() + timeout
        detail = ""
        while time.monotonic() < deadline:
            for node in nodes:
                if procs.read_pid(self.node_pid_file(node)) is None:
                    log = self.node_log_file(node)
                    raise UserError(f"kafka node {node} exited during start. Last lines of {log}:\n{procs.tail(log)}")
            ok, detail = self.health("kafka", ports)
            if ok:
                return
            time.sleep(0.3)
        for node in nodes:
            procs.stop(self.node_pid_file(node))
        log = self.node_log_file(nodes[0])
        raise UserError(
            f"kafka ({ports.brokers} brokers) was not healthy within {timeout:.0f}s ({detail}). "
            f"Last lines of {log}:\n{procs.tail(log)}"
        )

    def _apply_acls(self, java: str, lib: Path, ports: Ports) -> None:
        """Create the ACLs of secure.acl_rules() as pdx-admin (idempotent: Kafka keeps one copy of each)."""
        files = self.secure_files
        client_props = files.home / "admin-client.properties"
        secure.write_private(client_props, secure.admin_client_properties(files, f"127.0.0.1:{ports.kafka}"))
        acls = files.home / "acls.txt"
        acls.write_text("".join(rule.line() + "\n" for rule in secure.acl_rules(self.settings.app_id)))
        tool = Path(__file__).with_name("KafkaAcls.java")
        log4j = self.service_dir("kafka") / "log4j2.properties"
        _run_or_fail(
            [java, f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{lib}/*", str(tool), str(client_props), str(acls)],
            "setting the Kafka ACLs failed",
        )

    # ---- clickhouse ----------------------------------------------------------------------------
    def _start_clickhouse(self, ports: Ports) -> None:
        _check_ports("clickhouse", (ports.clickhouse_http, ports.clickhouse_tcp))
        try:
            import chdb  # type: ignore[import-not-found]  # noqa: F401
        except ImportError:
            raise UserError("the chdb-core package is missing: install pdx with `pip install -e .`") from None
        home = self.service_dir("clickhouse")
        home.mkdir(parents=True, exist_ok=True)
        users = chusers.ensure_credentials(self.state_dir, f"http://127.0.0.1:{ports.clickhouse_http}")
        secure.write_private(home / "users.xml", chusers.users_xml(users))
        (home / "config.xml").write_text(
            "<clickhouse>\n"
            "  <listen_host>127.0.0.1</listen_host>\n"
            f"  <http_port>{ports.clickhouse_http}</http_port>\n"
            f"  <tcp_port>{ports.clickhouse_tcp}</tcp_port>\n"
            f"  <user_directories><users_xml><path>{home / 'users.xml'}</path></users_xml></user_directories>\n"
            # views run as their definer (the admin who migrated), so the sink needs INSERT only (chusers.py)
            "  <ignore_empty_sql_security_in_create_view_query>false</ignore_empty_sql_security_in_create_view_query>\n"
            "</clickhouse>\n"
        )
        procs.spawn(
            [sys.executable, "-m", "streams.devservices.chserver", "--data", str(home / "data")],
            cwd=home,
            log_file=self.log_file("clickhouse"),
            pid_file=self.pid_file("clickhouse"),
            env={"PYTHONPATH": str(config.PACKAGE_PARENT)},
        )
        with step(f"Starting ClickHouse (chdb engine) on 127.0.0.1:{ports.clickhouse_http}"):
            self._wait_healthy("clickhouse", ports, CLICKHOUSE_HEALTH_TIMEOUT_S)
        self._upgrade_views(ports)

    def _upgrade_views(self, ports: Ports) -> None:
        from streams.audit.store import connect

        url = f"http://127.0.0.1:{ports.clickhouse_http}"
        login = config.dev_clickhouse_login(chusers.credentials_path(self.state_dir), "admin", url)
        if login is None:
            return
        user, password = (urllib.parse.quote(x, safe="") for x in login)
        client = connect(f"http://{user}:{password}@127.0.0.1:{ports.clickhouse_http}", cfg=self.settings)
        try:
            changed = chusers.upgrade_views(client)
        finally:
            client.close()
        if changed:
            say(f"clickhouse: views now run as their definer: {', '.join(changed)}")

    def _wait_healthy(self, name: str, ports: Ports, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        detail = ""
        while time.monotonic() < deadline:
            if self.running_pid(name) is None:
                log = self.log_file(name)
                raise UserError(f"{name} exited during start. Last lines of {log}:\n{procs.tail(log)}")
            ok, detail = self.health(name, ports)
            if ok:
                return
            time.sleep(0.3)
        log = self.log_file(name)
        procs.stop(self.pid_file(name))
        raise UserError(
            f"{name} was not healthy within {timeout:.0f}s ({detail}). Last lines of {log}:\n{procs.tail(log)}"
        )


def _check_ports(service: str, ports: tuple[int, ...]) -> None:
    for port in ports:
        if procs.port_in_use(port):
            holder = procs.who_listens(port)
            raise UserError(
                f"cannot start {service}: port {port} is already in use"
                + (f" by {holder}" if holder else "")
                + ". Stop that process, or choose other ports (pdx dev up --free-ports, or the PDX_*_PORT variables)."
            )


def _run_or_fail(cmd: list[str], failure: str) -> None:
    """Run a setup command; on failure raise a UserError with what failed and the tail of its output."""
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise UserError(f"{failure}:\n{(result.stdout + result.stderr)[-2000:]}")


def new_cluster_id() -> str:
    """A KRaft cluster id (base64url of a UUID), never starting with '-' (a CLI would read it as an option)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def find_java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home and (Path(home) / "bin" / "java").exists() else shutil.which("java")
    if not java:
        raise UserError("java not found: Kafka needs a JDK 17+ (Debian: apt-get install openjdk-17-jdk-headless)")
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)', out)
    if match and int(match.group(1)) < 17:
        raise UserError(
            f"{java} is Java {match.group(1)}; Kafka {config.KAFKA_VERSION} needs Java 17+ (set JAVA_HOME)"
        )
    return java


def ensure_kafka_jars(cache_dir: Path) -> Path:
    """The directory holding Kafka's jars (under ``cache_dir``, PDX_CACHE_DIR), resolved by Maven once and cached."""
    target = cache_dir / f"kafka-{config.KAFKA_SCALA}-{config.KAFKA_VERSION}"
    lib = target / "lib"
    if (target / ".complete").exists():
        return lib
    mvn = shutil.which("mvn")
    if not mvn:
        raise UserError("mvn not found: Maven resolves Kafka's jars from Maven Central (Debian: apt-get install maven)")
    pom = Path(__file__).with_name("kafka-pom.xml")
    staging = target / "lib.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with step(f"Resolving Apache Kafka {config.KAFKA_VERSION} jars from Maven Central (first time only)"):
        _run_or_fail(
            [
                mvn,
                "-B",
                "-q",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-Dkafka.version={config.KAFKA_VERSION}",
                f"-DoutputDirectory={staging}",
                "-DincludeScope=runtime",
            ],
            f"Maven could not resolve Kafka {config.KAFKA_VERSION} (is Maven Central reachable?)",
        )
    shutil.rmtree(lib, ignore_errors=True)
    staging.rename(lib)
    (target / ".complete").write_text(config.KAFKA_VERSION + "\n")
    return lib


_PLAINTEXT_LISTENERS = """listeners=PLAINTEXT://127.0.0.1:{kafka},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{kafka}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
"""


def _cluster_properties(ports: Ports, node: int, data: Path) -> str:
    """server.properties of node ``node`` of a multi-broker cluster: a combined broker+controller with one
    static quorum of every node (``controller.quorum.voters``), and Kafka's own topics replicated like pdx's
    (3 copies, 2 in sync), so losing one broker loses neither consumer offsets nor transactions.

    Failure detection is shortened for a dev cluster: a broker missing heartbeats for 4 s (default 9 s) is
    fenced and its partitions get new leaders. A crash is then survived in seconds, while a node slowed
    down by a busy 2-core machine (GC, CPU) is still far from the limit (heartbeats every 500 ms)."""
    by_node = {n: (port, controller) for n, port, controller in ports.kafka_nodes()}
    port, controller = by_node[node]
    voters = ",".join(f"{n}@127.0.0.1:{c}" for n, (_, c) in by_node.items())
    rf = min(3, ports.brokers)
    isr = max(1, rf - 1)
    block = _PLAINTEXT_LISTENERS.format(kafka=port, controller=controller)
    return f"""# written by pdx dev up --brokers {ports.brokers}; regenerated on every start
process.roles=broker,controller
node.id={node}
controller.quorum.voters={voters}
{block}log.dirs={data}
num.partitions=1
default.replication.factor={rf}
auto.create.topics.enable=false
offsets.topic.replication.factor={rf}
offsets.topic.num.partitions=8
transaction.state.log.replication.factor={rf}
transaction.state.log.min.isr={isr}
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor={rf}
share.coordinator.state.topic.min.isr={isr}
group.initial.rebalance.delay.ms=0
log.cleaner.min.compaction.lag.ms=0
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=4000
"""


def _kafka_properties(ports: Ports, data: Path, listeners: str | None = None) -> str:
    """server.properties; ``listeners``: the listener/security block (default: plaintext, as pdx dev up always had)."""
    block = listeners or _PLAINTEXT_LISTENERS.format(kafka=ports.kafka, controller=ports.kafka_controller)
    return f"""# written by pdx dev up; regenerated on every start
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{ports.kafka_controller}
{block}log.dirs={data}
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.cleaner.min.compaction.lag.ms=0
"""


_KAFKA_LOG4J = """status = error
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = STDOUT
logger.oak.name = org.apache.kafka
logger.oak.level = warn
logger.state.name = state.change.logger
logger.state.level = warn
"""


def clickhouse_health(url: str, timeout_s: float = 3.0) -> tuple[bool, str]:
    """`SELECT version()` over the HTTP interface: (healthy, detail)."""
    query = urllib.parse.urlencode({"query": "SELECT version()"})
    try:
        with urllib.request.urlopen(f"{url}/?{query}", timeout=timeout_s) as resp:  # noqa: S310 - local URL
            return True, f"ClickHouse {resp.read().decode().strip()}"
    except Exception as exc:  # noqa: BLE001
        return False, f"SELECT version() failed: {exc}"
