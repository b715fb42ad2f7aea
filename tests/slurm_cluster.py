"""A real single-node Slurm for the tests: munged, slurmctld and slurmd from Debian's packages.

Started by hand in a temporary folder (no systemd), bound to loopback, and stopped by pid.
`python tests/slurm_cluster.py FOLDER` starts one and waits, to try things by hand:
`SLURM_CONF=FOLDER/slurm.conf srun hostname`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

PROGRAMS = ("munged", "mungekey", "slurmctld", "slurmd", "srun", "sbatch", "squeue", "scancel",
            "sinfo")
NODE = "crude-link-node"
PARTITION = "debug"

SLURM_CONF = """\
ClusterName=crude-link-test
SlurmctldHost={host}(127.0.0.1)
MailProg=/bin/true
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder}/munge/munge.socket
CommunicationParameters=NoCtldInAddrAny
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MinJobAge=4
KillWait=30
InactiveLimit=0
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
NodeName={node} NodeAddr=127.0.0.1 NodeHostname={node} CPUs={cpus} State=UNKNOWN
PartitionName={partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def missing_programs() -> List[str]:
    return [name for name in PROGRAMS if shutil.which(name) is None]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """One running Slurm; `env` is what a client (srun, sbatch, the scheduler) needs."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.conf = folder / "slurm.conf"
        self.env: Dict[str, str] = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.procs: List[subprocess.Popen[bytes]] = []
        self.cpus = 2

    def start(self, timeout: float = 30.0) -> None:
        folder = self.folder
        for sub in ("munge", "state", "spool"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / "munge").chmod(0o755)  # munged refuses a socket dir others cannot enter
        key = folder / "munge" / "munge.key"
        subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True,
                       capture_output=True)
        key.chmod(0o600)
        self.conf.write_text(SLURM_CONF.format(
            node=NODE, host=socket.gethostname().split(".")[0], partition=PARTITION,
            folder=folder, cpus=self.cpus, ctld_port=free_port(), d_port=free_port()),
            encoding="utf-8")
        self._daemon(["munged", "--foreground", "--force", f"--socket={folder}/munge/munge.socket",
                      f"--key-file={key}", f"--pid-file={folder}/munge/munged.pid",
                      f"--log-file={folder}/munge/munged.log",
                      f"--seed-file={folder}/munge/munged.seed"], "munged")
        self._wait_for(lambda: (folder / "munge" / "munge.socket").exists(), timeout, "munged")
        self._daemon(["slurmctld", "-D", "-i", "-f", str(self.conf)], "slurmctld")
        self._daemon(["slurmd", "-D", "-N", NODE, "-f", str(self.conf)], "slurmd")
        self._wait_for(self._node_idle, timeout, "the node to be idle in sinfo")

    def _daemon(self, argv: List[str], name: str) -> None:
        out = open(self.folder / f"{name}.out", "wb")  # noqa: SIM115 - the daemon keeps it
        self.procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                           stderr=subprocess.STDOUT, env=self.env,
                                           start_new_session=True))
        out.close()

    def _node_idle(self) -> bool:
        result = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env,
                                capture_output=True, text=True)
        return result.returncode == 0 and result.stdout.strip() == "idle"

    def _wait_for(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while not ready():
            dead = [str(p.args) for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > end:
                logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
                                 for p in sorted(self.folder.glob("*.out")))
                raise RuntimeError(f"Slurm did not start (waiting for {what}; "
                                   f"exited: {dead}):\n{logs}")
            time.sleep(0.1)

    def squeue(self) -> List[str]:
        """Return 'jobid state name' for every job Slurm still knows as queued or running."""
        result = subprocess.run(["squeue", "-h", "-o", "%i %T %j"], env=self.env,
                                capture_output=True, text=True, check=True)
        return result.stdout.split("\n")[:-1]

    def wait_queue_empty(self, timeout: float = 20.0) -> List[str]:
        """Wait until squeue shows no job; return what is left at the timeout."""
        end = time.monotonic() + timeout
        while (left := self.squeue()) and time.monotonic() < end:
            time.sleep(0.2)
        return left

    def stop_jobs(self) -> None:
        subprocess.run(["scancel", "--full", "--user", str(os.getuid())], env=self.env,
                       capture_output=True)

    def stop(self) -> None:
        self.stop_jobs()
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start(folder: Path) -> Cluster:
    cluster = Cluster(folder)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


if __name__ == "__main__":
    target = Path(sys.argv[1]).resolve()
    running = start(target)
    print(f"Slurm is up: SLURM_CONF={running.conf}  (Ctrl-C or SIGTERM stops it)", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the daemons on kill too
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        running.stop()
