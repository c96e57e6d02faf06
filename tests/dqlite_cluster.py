"""A throwaway 3-node dqlite cluster on loopback ports, for the cluster tests and benchmarks.

Each node is Debian's ``dqlite-demo`` (package go-dqlite, on libdqlite0) with its data in a
temporary directory; nodes are started and stopped by their process ids, nothing else is touched.
Installs nothing: ``missing()`` says what to install when the programs are absent.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DEMO = "dqlite-demo"
SHELL = "dqlite"
READY_TIMEOUT = 30.0


def missing() -> str | None:
    """Why a cluster cannot run here (with how to enable it), or None when it can."""
    if shutil.which(DEMO) is None or shutil.which(SHELL) is None:
        return "dqlite is not installed (apt-get install libdqlite0 go-dqlite)"
    try:
        import dqlitedbapi  # noqa: F401
    except ImportError:
        return "the dqlite-dbapi client is not installed (it needs Python 3.13: the '.[dqlite]' extra)"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Node:
    api: str
    db: str
    directory: Path
    join: str | None
    log: Path
    process: subprocess.Popen | None = None
    wanted_up: bool = False

    def start(self) -> None:
        self.wanted_up = True
        command = [DEMO, "--api", self.api, "--db", self.db, "--dir", str(self.directory)]
        if self.join:
            command += ["--join", self.join]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop this node's process (by its pid) and wait for it."""
        self.wanted_up = False
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, sig)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Cluster:
    """Three dqlite nodes in ``root``; ``addresses`` are their database (client) addresses."""

    root: Path
    nodes: list[Node] = field(default_factory=list)

    @classmethod
    def start(cls, root: Path, size: int = 3) -> Cluster:
        cluster = cls(root)
        first = None
        for number in range(1, size + 1):
            directory = root / f"node{number}"
            directory.mkdir(parents=True)
            db = f"127.0.0.1:{_free_port()}"
            node = Node(f"127.0.0.1:{_free_port()}", db, directory, first, root / f"node{number}.log")
            first = first or db
            cluster.nodes.append(node)
        try:
            cluster.nodes[0].start()
            cluster.wait_ready(voters=1)
            for node in cluster.nodes[1:]:
                node.start()
            cluster.wait_ready()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @property
    def addresses(self) -> list[str]:
        return [node.db for node in self.nodes]

    def shell(self, database: str, command: str, timeout: float = 5.0) -> str:
        """Output of the ``dqlite`` shell running ``command`` against the live nodes."""
        servers = ",".join(node.db for node in self.nodes if node.running)
        result = subprocess.run(
            [SHELL, "-s", servers, database, command], capture_output=True, text=True, timeout=timeout, check=True
        )
        return result.stdout.strip()

    def wait_ready(self, voters: int | None = None, database: str = "readiness") -> None:
        """Wait until a leader answers and ``voters`` nodes (default: every running one) are voters."""
        wanted = voters if voters is not None else sum(node.running for node in self.nodes)
        deadline = time.monotonic() + READY_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.wanted_up and not node.running:
                    raise RuntimeError(f"dqlite node {node.db} exited; log: {node.log.read_text(errors='replace')[-2000:]}")
            try:
                listing = self.shell(database, ".cluster", timeout=3)
                live = {node.db for node in self.nodes if node.running}
                rows = [line.split("|") for line in listing.splitlines() if line.strip()]
                if sum(1 for row in rows if len(row) == 3 and row[2] == "voter" and row[1] in live) >= wanted and self.leader(database):
                    return
                last = listing
            except (subprocess.SubprocessError, OSError) as error:
                last = str(error)
            time.sleep(0.2)
        raise RuntimeError(f"the dqlite cluster in {self.root} was not ready after {READY_TIMEOUT} s: {last}")

    def leader(self, database: str = "readiness") -> str:
        """The database address of the current leader ('' when there is none)."""
        try:
            return self.shell(database, ".leader", timeout=3)
        except (subprocess.SubprocessError, OSError):
            return ""

    def node(self, address: str) -> Node:
        return next(node for node in self.nodes if node.db == address)

    def kill_leader(self, database: str = "readiness") -> Node:
        """SIGKILL the leader's process; returns its node (restart it with ``restart``)."""
        node = self.node(self.leader(database))
        node.stop(signal.SIGKILL)
        return node

    def transfer_leadership(self, database: str = "readiness") -> str:
        """Hand leadership to another running node (a graceful leader change: no process stops), through
        the client library's admin call; returns the new leader's address once it answers as leader."""
        import asyncio

        from dqliteclient.cluster import ClusterClient  # pyright: ignore[reportMissingImports]  (the dqlite extra)

        leader = self.leader(database)
        target = next(node.db for node in self.nodes if node.running and node.db != leader)

        async def transfer() -> None:
            client = ClusterClient.from_addresses([node.db for node in self.nodes if node.running])
            members = await client.cluster_info()
            await client.transfer_leadership(next(member.node_id for member in members if member.address == target))

        asyncio.run(transfer())
        deadline = time.monotonic() + READY_TIMEOUT
        while self.leader(database) != target:
            if time.monotonic() > deadline:
                raise RuntimeError(f"leadership did not move to {target}")
            time.sleep(0.1)
        return target

    def restart(self, node: Node) -> None:
        node.start()
        self.wait_ready()

    def stop(self) -> None:
        """Kill every node (the data is thrown away with ``root``)."""
        for node in self.nodes:
            node.stop(signal.SIGKILL)
