"""Two training "nodes" on one machine, for the multi-node tests.

Each node is a launcher of its own, started separately with its own node rank, one training process
per node; they meet at 127.0.0.1 and talk over gloo, as nodes of a cluster do over the network:

- `torchrun --nnodes 2 --node_rank R --master_addr 127.0.0.1 --master_port P --nproc_per_node 1`;
- DeepSpeed's launcher with a two-host hostfile and `--no_ssh --node_rank R` (without `--no_ssh` it
  reaches the other hosts through pdsh and ssh; with it, each node's launcher starts only its own
  processes and the host names are labels, so both entries can be this machine).

Each node runs in a process group of its own; it and the groups of every process it started are
killed when the run's `with` block ends (whatever happened). A node can run under strace, which
records every file its processes open for writing or rename; `file_writers` replays both nodes'
records to tell which node wrote each file.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.train.train_helpers import REPO, SUBPROCESS_ENV

HOST = "127.0.0.1"
LAUNCHERS = ("torchrun", "deepspeed")
TRAIN_MODULE = "llava.train.cpu_deepspeed_launch"  # the CPU/gloo shim (its docstring says why)
# Both hosts resolve to this machine; under --no_ssh the launcher only reads them as node labels.
HOSTFILE = "localhost slots=1\n127.0.0.1 slots=1\n"
# Only the calls that create, write or rename files, filtered in the kernel (seccomp-bpf): the
# traced processes run at full speed otherwise.
STRACE = [
    "strace",
    "-f",
    "-qq",
    "--seccomp-bpf",
    "-e",
    "trace=open,openat,openat2,creat,rename,renameat,renameat2",
]
_CALL = re.compile(r"^(?P<tid>\d+) +(?P<time>\d+\.\d+) +(?P<call>\w+)\((?P<args>.*)$")
_RESUMED = re.compile(r"^(?P<tid>\d+) +\d+\.\d+ +<\.\.\. \w+ resumed>(?P<rest>.*)$")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_WRITE_FLAGS = re.compile(r"\bO_(WRONLY|RDWR|CREAT|TRUNC)\b")
_FAILED = re.compile(r"= -1 ")


def free_port() -> int:
    """A TCP port nothing listens on now (the kernel's pick for port 0)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def strace_usable() -> bool:
    """Whether strace is installed and may trace a child here (ptrace can be forbidden)."""
    if shutil.which("strace") is None:
        return False
    probe = subprocess.run([*STRACE, "-o", os.devnull, "true"], check=False)
    return probe.returncode == 0


def node_command(launcher: str, node_rank: int, port: int, hostfile: Path, argv: list[str]) -> list[str]:
    """The command line of node `node_rank` of two, one process, running `argv` (`-m` module + args)."""
    if launcher == "torchrun":
        return [
            sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(node_rank),
            "--master_addr", HOST, "--master_port", str(port), "--nproc_per_node", "1", "-m", *argv,
        ]  # fmt: skip
    if launcher == "deepspeed":  # the `deepspeed` command
        return [
            sys.executable, "-m", "deepspeed.launcher.runner", "--hostfile", str(hostfile), "--no_ssh",
            "--node_rank", str(node_rank), "--master_addr", HOST, "--master_port", str(port),
            "--no_local_rank", "--module", *argv,
        ]  # fmt: skip
    raise ValueError(f"unknown launcher {launcher!r}: one of {LAUNCHERS}")


def _exit_code(proc: subprocess.Popen) -> int | None:
    """`proc`'s exit code (negative: killed by that signal), or None while it runs. Does not reap
    it, so its process group id stays taken until the group is killed."""
    info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
    if info is None or info.si_pid == 0:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


class Launches(contextlib.AbstractContextManager):
    """Launcher commands, each in a process group of its own with its output in `work/<name>.log`;
    leaving the `with` block kills each with everything it started (`kill`)."""

    def __init__(self, work: Path):
        self.work = work
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, command: list[str], trace: Path | None = None) -> None:
        """Start `command`; under strace, recording into `trace`, when given."""
        if trace is not None:
            command = [*STRACE, "-ttt", "-o", str(trace), *command]
        with open(self.work / f"{name}.log", "w") as log:
            self.procs[name] = subprocess.Popen(
                command,
                cwd=REPO,
                env=SUBPROCESS_ENV,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait(self, name: str, timeout: float, until=lambda: False) -> int | None:
        """`name`'s exit code once it has exited, or None when `until()` comes true or `timeout`
        seconds pass first."""
        deadline = time.monotonic() + timeout
        while (code := _exit_code(self.procs[name])) is None:
            if until() or time.monotonic() > deadline:
                return None
            time.sleep(0.2)
        return code

    def kill(self, name: str) -> None:
        """SIGKILL `name` and every process it started: their process groups, found while the tree
        is whole (torchrun starts each training process in a session of its own, which killing
        the launcher's group alone would leave running, orphaned)."""
        pid = self.procs[name].pid
        groups = {pid}
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(pid).children(recursive=True):
                with contextlib.suppress(ProcessLookupError):
                    groups.add(os.getpgid(child.pid))
        for group in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)

    def log_tails(self, chars: int = 3000) -> str:
        logs = [self.work / f"{name}.log" for name in self.procs]
        return "\n".join(f"--- {log.name}\n{log.read_text()[-chars:]}" for log in logs)

    def __exit__(self, *exc) -> None:
        for name, proc in self.procs.items():
            self.kill(name)
            proc.wait()


def run_one_node(argv: list[str], work: Path, timeout: float = 600) -> None:
    """`argv` (`-m` module + args) as one node of two processes (`torchrun --nproc_per_node 2`)."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", HOST,
        "--master_port", str(free_port()), "-m", *argv,
    ]  # fmt: skip
    with Launches(work) as launches:
        launches.start("one-node", command)
        code = launches.wait("one-node", timeout)
        assert code == 0, f"exit code {code}\n{launches.log_tails()}"


class TwoNodes(Launches):
    """The two nodes of one run (`<name>.node0`, `<name>.node1`), started with `launcher`; with
    `trace`, each under strace, recording into `work/<name>.node<R>.strace` (`self.traces`)."""

    def __init__(self, launcher: str, work: Path, name: str, trace: bool = False):
        super().__init__(work)
        self.launcher, self.name, self.trace = launcher, name, trace
        self.port = free_port()
        self.hostfile = work / f"{name}.hostfile"
        self.hostfile.write_text(HOSTFILE)
        self.traces = [work / f"{name}.node{rank}.strace" for rank in (0, 1)]

    def node(self, node_rank: int) -> str:
        return f"{self.name}.node{node_rank}"

    def start_node(self, node_rank: int, argv: list[str]) -> None:
        command = node_command(self.launcher, node_rank, self.port, self.hostfile, argv)
        self.start(self.node(node_rank), command, self.traces[node_rank] if self.trace else None)

    def wait_node(self, node_rank: int, timeout: float, until=lambda: False) -> int | None:
        return self.wait(self.node(node_rank), timeout, until)

    def kill_node(self, node_rank: int) -> None:
        """SIGKILL every process of node `node_rank`: its launcher and its training process."""
        self.kill(self.node(node_rank))

    def run(self, argv: list[str], timeout: float = 600) -> None:
        """Both nodes run `argv` to the end; both must succeed."""
        for rank in (0, 1):
            self.start_node(rank, argv)
        codes = [self.wait_node(rank, timeout) for rank in (0, 1)]
        assert codes == [0, 0], f"exit codes {codes}\n{self.log_tails()}"


def _write_events(trace: Path, node_rank: int) -> list[tuple[float, int, str, tuple[str, ...]]]:
    """`(time, node, "write" | "rename", paths)` of the successful calls in one node's strace log.

    A call that another thread interrupted is split over an `<unfinished ...>` line (its
    arguments) and a `<... resumed>` line (its result)."""
    events, pending = [], {}
    for line in trace.read_text().splitlines():
        if match := _RESUMED.match(line):
            event = pending.pop(match["tid"], None)
            if event is not None and not _FAILED.search(match["rest"]):
                events.append(event)
            continue
        match = _CALL.match(line)
        if match is None:
            continue
        call, args = match["call"], match["args"]
        paths = tuple(_QUOTED.findall(args))
        if call.startswith("rename"):
            event = (float(match["time"]), node_rank, "rename", paths[:2])
        elif call == "creat" or _WRITE_FLAGS.search(args):
            event = (float(match["time"]), node_rank, "write", paths[:1])
        else:
            continue
        if "<unfinished ...>" in args:
            pending[match["tid"]] = event
        elif not _FAILED.search(args):
            events.append(event)
    return events


def file_writers(traces: list[Path], root: Path) -> dict[str, set[int]]:
    """For every file under `root` the nodes traced in `traces` (node rank = index) wrote, the set
    of nodes that wrote it, following renames (a file written as `.tmp-checkpoint-3/x` and
    published as `checkpoint-3/x` counts under its final name).

    The two logs are replayed in the order of their timestamps. Both nodes share this machine's
    clock, and a traced call is stamped before the process goes on, so a file one node writes
    before a barrier is stamped before the other node renames its folder after that barrier."""
    events = sorted(event for rank, trace in enumerate(traces) for event in _write_events(trace, rank))
    writers: dict[str, set[int]] = {}
    for _, node_rank, kind, paths in events:
        if kind == "write":
            writers.setdefault(paths[0], set()).add(node_rank)
            continue
        source, target = paths
        moved = [path for path in writers if path == source or path.startswith(source + "/")]
        for path in moved:
            writers[target + path[len(source) :]] = writers.pop(path)
    prefix = f"{root}/"
    return {
        path: nodes for path, nodes in writers.items() if path.startswith(prefix) and Path(path).is_file()
    }
