"""A one-node SLURM cluster (munged, MariaDB, slurmdbd, slurmctld, slurmd) on localhost, for tests.

Everything lives in one temporary directory: the MUNGE key and socket, the database, the
configuration (SLURM_CONF points at it), state, spool and logs. The daemons run in the
foreground as children of this process, listen on 127.0.0.1 (SLURM, on free ports) or on a Unix
socket only (MUNGE, MariaDB), and `stop()` ends them and every process that was started under the
cluster (job steps and jobs, found by the cluster's directory in their environment), then checks
that none is left.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
BINARIES = ["munged", "mungekey", "mariadb-install-db", "mariadbd", "slurmdbd", "slurmctld", "slurmd",
            "sbatch", "srun", "squeue", "sacct", "sacctmgr", "scancel", "scontrol", "sinfo"]
DEBIAN_PACKAGES = "munge mariadb-server slurmdbd slurmctld slurmd slurm-client"
CLUSTER, PARTITION, ACCOUNT = "bagmartest", "test", "bagmar"


def missing_binaries() -> list[str]:
    return [name for name in BINARIES if shutil.which(name) is None]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class SlurmCluster:
    def __init__(self, cpus: int, gpus: int = 2, memory_mb: int | None = None):
        if missing := missing_binaries():
            raise RuntimeError(f"SLURM test cluster: missing {', '.join(missing)} (Debian: {DEBIAN_PACKAGES})")
        self.host = socket.gethostname().split(".")[0]
        address = socket.gethostbyname(self.host)
        if not address.startswith("127."):
            raise RuntimeError(f"host name {self.host} resolves to {address}, not to a loopback address: "
                               "the SLURM daemons bind to it, and must listen on localhost only")
        # short path: Unix socket paths are limited to 107 bytes
        self.root = Path(tempfile.mkdtemp(prefix="bagmar-slurm-"))
        self.cpus, self.gpus = cpus, gpus
        self.memory_mb = memory_mb or _memory_mb() - 1024
        self.processes: dict[str, subprocess.Popen] = {}
        self.env = {**os.environ, "SLURM_CONF": str(self.root / "etc" / "slurm.conf"),
                    "MYSQL_UNIX_PORT": str(self.root / "db" / "mysql.sock"),
                    "PATH": os.pathsep.join([str(self.root / "bin"), os.environ.get("PATH", os.defpath)])}
        for variable in list(self.env):  # a surrounding SLURM job's settings must not leak in
            if variable.startswith(("SLURM_", "SBATCH_", "SRUN_", "SQUEUE_", "SACCT_")) and variable != "SLURM_CONF":
                del self.env[variable]

    # -- start ----------------------------------------------------------------------------------

    def start(self) -> "SlurmCluster":
        try:
            self._write_files()
            self._start_munge()
            self._start_database()
            self._spawn("slurmdbd", ["slurmdbd", "-D"])
            self._wait_for_port(self.ports["dbd_port"], "slurmdbd")
            self._spawn("slurmctld", ["slurmctld", "-D", "-i"])
            self._wait(lambda: self.run("scontrol", "ping", check=False).stdout.count("UP") == 1, "slurmctld")
            self._wait(lambda: CLUSTER in self.run("sacctmgr", "-n", "-P", "list", "cluster", "format=cluster").stdout,
                       "slurmctld to register with slurmdbd")
            self.run("sacctmgr", "-i", "add", "account", ACCOUNT)
            self.run("sacctmgr", "-i", "add", "user", "root", f"account={ACCOUNT}")
            self._spawn("slurmd", ["slurmd", "-D"])
            self._wait(lambda: self.run("sinfo", "-h", "-N", "-o", "%T").stdout.strip() == "idle", "slurmd (node idle)")
        except BaseException:
            self.stop()
            raise
        return self

    def _write_files(self) -> None:
        for name in ("bin", "etc", "munge", "db", "state/slurmctld", "state/slurmd", "run", "log", "dev"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        # Inside a job, the executor plugin's job step removes SLURM_* variables (SLURM_CONF among
        # them) from the environment of the srun it starts; a real cluster's srun then reads
        # /etc/slurm/slurm.conf, this cluster's configuration is elsewhere. This srun (and scontrol), first
        # on the jobs' PATH (sbatch --export=ALL), puts it back and runs the real one.
        for client in ("srun", "scontrol"):  # scontrol: a multi-node training's launch asks it for the nodes
            wrapper = self.root / "bin" / client
            wrapper.write_text(f'#!/bin/sh\nSLURM_CONF={self.env["SLURM_CONF"]} exec {shutil.which(client)} "$@"\n')
            wrapper.chmod(0o755)
        self.root.chmod(0o755)  # munged wants its socket's directories traversable by all
        (self.root / "munge").chmod(0o711)
        for index in range(self.gpus):
            os.mknod(self.root / "dev" / f"gpu{index}", 0o600 | 0o020000, os.makedev(1, 3))  # char 1:3
        ctld, slurmd, dbd = free_ports(3)
        self.ports = {"ctld_port": ctld, "slurmd_port": slurmd, "dbd_port": dbd}
        values = {"cluster": CLUSTER, "partition": PARTITION, "host": self.host, "root": str(self.root),
                  "cpus": self.cpus, "gpus": self.gpus, "last_gpu": self.gpus - 1, "memory_mb": self.memory_mb,
                  **self.ports}
        for name in ("slurm.conf", "gres.conf", "slurmdbd.conf"):
            target = self.root / "etc" / name
            target.write_text(string.Template((HERE / name).read_text()).substitute(values))
            target.chmod(0o600)  # slurmdbd refuses a slurmdbd.conf that others can read

    def _start_munge(self) -> None:
        key = self.root / "munge" / "munge.key"
        self.run("mungekey", "--create", f"--keyfile={key}")
        self._spawn("munged", ["munged", "--foreground", f"--socket={self.root / 'munge' / 'munge.socket'}",
                               f"--key-file={key}", f"--pid-file={self.root / 'run' / 'munged.pid'}",
                               f"--log-file={self.root / 'log' / 'munged.log'}",
                               f"--seed-file={self.root / 'munge' / 'munged.seed'}", "--num-threads=4"])
        self._wait(lambda: (self.root / "munge" / "munge.socket").exists(), "munged")

    def _start_database(self) -> None:
        data, sock = self.root / "db" / "data", self.root / "db" / "mysql.sock"
        self.run("mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
                 "--auth-root-authentication-method=normal", "--skip-test-db")
        self._spawn("mariadbd", ["mariadbd", "--no-defaults", f"--datadir={data}", f"--socket={sock}",
                                 "--skip-networking", "--user=root", f"--pid-file={self.root / 'run' / 'mariadbd.pid'}",
                                 f"--log-error={self.root / 'log' / 'mariadbd.log'}", "--skip-log-bin",
                                 "--innodb-buffer-pool-size=128M", "--innodb-lock-wait-timeout=900"])
        self._wait(lambda: sock.exists(), "mariadbd")

    def _spawn(self, name: str, command: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "w")
        self.processes[name] = subprocess.Popen(command, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def _wait(self, ready, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited ({process.returncode}) while waiting for {what}:\n{self.logs()}")
            try:
                if ready():
                    return
            except subprocess.CalledProcessError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"waited {timeout} s for {what}:\n{self.logs()}")

    def _wait_for_port(self, port: int, what: str) -> None:
        def listening():
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0
        self._wait(listening, what)

    # -- use ------------------------------------------------------------------------------------

    def run(self, *command: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """A SLURM (or MUNGE, MariaDB) client command against this cluster."""
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, command, result.stdout, result.stderr)
        return result

    def sacct(self, *fields: str, name: str | None = None) -> list[dict[str, str]]:
        """One row per job (no steps), all users, from the accounting database."""
        command = ["sacct", "-X", "-a", "--parsable2", "--noheader", "--starttime=2000-01-01",
                   f"--format={','.join(fields)}"]
        if name:
            command.append(f"--name={name}")
        rows = self.run(*command).stdout.splitlines()
        return [dict(zip(fields, row.split("|"))) for row in rows if row]

    def final_state(self, *fields: str, name: str, timeout: float = 120) -> list[dict[str, str]]:
        """``sacct`` rows once accounting has recorded every job of that name as ended: slurmdbd can still show a job
        RUNNING for a moment after squeue has dropped it, the more so on a loaded machine."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.sacct("State", *fields, name=name)
            if rows and all(row["State"] not in ("PENDING", "RUNNING", "COMPLETING") for row in rows):
                return [{key: row[key] for key in fields} for row in rows]
            assert time.monotonic() < deadline, rows
            time.sleep(0.5)

    def listening_addresses(self) -> dict[str, set[str]]:
        """Daemon -> the local addresses of its listening TCP sockets (IPv4 and IPv6)."""
        inodes = {}
        for name, process in self.processes.items():
            try:
                for fd in Path(f"/proc/{process.pid}/fd").iterdir():
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes[target[8:-1]] = name
            except FileNotFoundError:
                continue
        found: dict[str, set[str]] = {name: set() for name in self.processes}
        for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and inode in inodes:  # LISTEN
                    address, port = local.split(":")
                    found[inodes[inode]].add(f"{_address(address, width)}:{int(port, 16)}")
        return found

    def logs(self) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            lines = path.read_text(errors="replace").splitlines()[-15:]
            parts.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    # -- stop -----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Cancel every job, end the daemons, then end and check for anything started under the cluster."""
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            self.run("scancel", "--full", "--user=root", check=False)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.run("squeue", "-h", check=False).stdout.strip():
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
            process = self.processes.get(name)
            if process is None:
                continue
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
        for pid in self.leftovers():  # job steps or jobs that outlived slurmd
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.2)

    def leftovers(self) -> list[int]:
        """Processes, other than this one and its ancestors, started by or under this cluster."""
        marker = str(self.root).encode()
        spared = {os.getpid(), *_ancestors()}
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in spared:
                continue
            try:
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    continue  # a zombie runs nothing
                if marker in (entry / "cmdline").read_bytes() or marker in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
        return found + [p.pid for p in self.processes.values() if p.poll() is None and p.pid not in found]

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _ancestors() -> set[int]:
    pids, pid = set(), os.getppid()
    while pid > 1:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ValueError):
            break
    return pids


def _address(hex_address: str, width: int) -> str:
    raw = bytes.fromhex(hex_address)
    if width == 8:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")
