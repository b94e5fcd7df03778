"""Sandbox hosts: local test hosts on one Linux machine, each a network namespace on a per-sandbox bridge with
its own address in 198.18.0.0/15, private mounts for PostgreSQL's directories, its own hostname, a Python
reaper as PID 1 and an sshd. This module makes, inspects, disturbs (partition, crash) and removes them; the
state of each sandbox lives in `<SANDBOX_ROOT>/<sandbox>/`."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline import proc, spec, targets
from pipeline.errors import CommandFailed, SandboxError
from pipeline.spec import NAME_RE, default_sandbox_subnet
from pipeline.workspace import dump_json, write_atomic

log = logging.getLogger(__name__)

TEST_RANGE = ipaddress.IPv4Network(str(spec.TEST_RANGE))  # 198.18.0.0/15, reserved for tests (RFC 2544)
HOST_RE = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
NETNS_DIR = Path("/run/netns")
LOCK_FILE = Path(os.environ.get("PGPIPE_SANDBOX_LOCK", "/run/pgpipe-sandbox.lock"))
SSHD = "/usr/sbin/sshd"
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
GUARD_METRIC = 4242  # recognisable, and below no route of ours: the per-sandbox /24s are more specific anyway
FIRST_HOST_OFFSET = 10
PG_DIRS = {"etc-postgresql": "/etc/postgresql", "var-lib-postgresql": "/var/lib/postgresql",
           "var-log-postgresql": "/var/log/postgresql"}
IP_TIMEOUT = 20.0
LOCK_TIMEOUT = 300.0
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
BAD_INPUT = "bad-input"
ROUTE_TYPES = ("unicast", "local", "broadcast", "multicast", "blackhole", "unreachable", "prohibit", "throw", "nat")

# Launchers (`unshare`) started by this process, so that stopping a host also reaps them here.
_launched: dict[str, subprocess.Popen[bytes]] = {}


# --- names and paths ------------------------------------------------------------------------------------
def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:11]


def bridge_name(sandbox: str) -> str:
    """Interface names have at most 15 characters: derive them from a hash."""
    return f"pgb-{_digest(sandbox)}"


def veth_name(sandbox: str, host: str) -> str:
    return f"pgv-{_digest(f'{sandbox}/{host}')}"


def netns_name(sandbox: str, host: str) -> str:
    # '_' is in neither a sandbox nor a host name, so the prefix `pgpipe_<sandbox>_` finds exactly its hosts.
    return f"pgpipe_{sandbox}_{host}"


def sandbox_dir(sandbox: str) -> Path:
    return targets.SANDBOX_ROOT / sandbox


def client_key(sandbox: str) -> Path:
    """The private key that logs in as root on every host of the sandbox."""
    return sandbox_dir(sandbox) / "ssh" / "id_ed25519"


def known_hosts(sandbox: str) -> Path:
    """Every host's key under its address and its name, for StrictHostKeyChecking=yes."""
    return sandbox_dir(sandbox) / "ssh" / "known_hosts"


def host_dir(sandbox: str, host: str) -> Path:
    return sandbox_dir(sandbox) / "hosts" / host


def _state_file(sandbox: str) -> Path:
    return sandbox_dir(sandbox) / "sandbox.json"


def _etc_hosts(sandbox: str) -> Path:
    return sandbox_dir(sandbox) / "etc-hosts"


def default_subnet(sandbox: str) -> str:
    """The /24 a sandbox gets when none is given (the same rule as ClusterSpec.sandbox_subnet)."""
    return default_sandbox_subnet(sandbox)


# --- validation -----------------------------------------------------------------------------------------
def check_sandbox_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise SandboxError(f"sandbox name {name!r} is not a DNS label: 1-32 of a-z, 0-9 and '-', starting with"
                           " a letter, not ending with '-'", reason=BAD_INPUT)
    return name


def check_host_name(name: str) -> str:
    if not HOST_RE.match(name):
        raise SandboxError(f"host name {name!r} is not a DNS label: 1-63 of a-z, 0-9 and '-', starting with a"
                           " letter, not ending with '-'", reason=BAD_INPUT)
    return name


def check_subnet(value: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError:
        raise SandboxError(f"subnet {value!r} is not a CIDR block such as 198.19.108.0/24", reason=BAD_INPUT) from None
    if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen != 24 or not net.subnet_of(TEST_RANGE):
        raise SandboxError(f"subnet {value!r} must be a /24 inside {TEST_RANGE}, the range reserved for tests",
                           reason=BAD_INPUT)
    return net


def check_ip(value: str, net: ipaddress.IPv4Network) -> str:
    try:
        ip = ipaddress.IPv4Address(value)
    except ValueError:
        raise SandboxError(f"{value!r} is not an IPv4 address", reason=BAD_INPUT) from None
    if ip not in TEST_RANGE:
        raise SandboxError(f"{value} is outside {TEST_RANGE}: sandbox hosts only use the range reserved for tests",
                           reason=BAD_INPUT)
    offset = int(ip) - int(net.network_address)
    if ip not in net or not 2 <= offset <= 254:
        raise SandboxError(f"{value} is not a host address of the sandbox's subnet {net} (.2 to .254; .1 is the"
                           " machine's end of the bridge)", reason=BAD_INPUT)
    return str(ip)


# --- the state file -------------------------------------------------------------------------------------
@dataclass
class HostRecord:
    ip: str
    pid: int | None = None
    start_time: int | None = None


@dataclass
class SandboxState:
    name: str
    subnet: str
    hosts: dict[str, HostRecord] = field(default_factory=dict)

    @property
    def net(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def gateway(self) -> str:
        return str(self.net.network_address + 1)


def _load(sandbox: str) -> SandboxState | None:
    try:
        data = json.loads(_state_file(sandbox).read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise SandboxError(f"cannot read the state of sandbox {sandbox!r}: {exc}") from None
    hosts = {name: HostRecord(**record) for name, record in data.get("hosts", {}).items()}
    return SandboxState(name=data["name"], subnet=data["subnet"], hosts=hosts)


def _save(state: SandboxState) -> None:
    data = {"name": state.name, "subnet": state.subnet, "bridge": bridge_name(state.name),
            "hosts": {name: asdict(record) for name, record in sorted(state.hosts.items())}}
    write_atomic(_state_file(state.name), dump_json(data))


def _sandbox_names() -> list[str]:
    root = targets.SANDBOX_ROOT
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "sandbox.json").is_file())


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One lock for every change: bridges, the guard route and subnets are machine-wide, and terraform runs
    the `up` and `down` of several hosts at once."""
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with LOCK_FILE.open("a") as handle:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SandboxError(f"{LOCK_FILE} stayed locked for {LOCK_TIMEOUT:.0f} s", reason="locked") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- processes ------------------------------------------------------------------------------------------
def _start_time(pid: int) -> int | None:
    """A live process's start time (clock ticks since boot): with the pid it names one process, even after
    the pid is reused. None for a process that is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _ns_pids(pid: int) -> list[int]:
    """The pid of `pid` in each PID namespace it belongs to, outermost first."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return [int(x) for x in line.split()[1:]]
    except OSError:
        pass
    return []


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _same_ns(pid: int, kind: str, ref: os.stat_result) -> bool:
    try:
        st = os.stat(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (ref.st_dev, ref.st_ino)


def _netns_pids(netns: str) -> list[int]:
    """Every live process in the named network namespace (what `ip netns pids` prints)."""
    try:
        ref = os.stat(NETNS_DIR / netns)
    except OSError:
        return []
    return [pid for pid in _all_pids() if _same_ns(pid, "net", ref)]


def _find_pid1(netns: str) -> int | None:
    """The host's PID 1: PID 1 of a namespace one level below ours (a deeper one is a container in the host)."""
    found = [(len(nspids), pid) for pid in _netns_pids(netns) if len(nspids := _ns_pids(pid)) > 1 and nspids[-1] == 1]
    return min(found)[1] if found else None


def _alive(record: HostRecord) -> bool:
    return record.pid is not None and _start_time(record.pid) == record.start_time


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")


def _kill(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


# --- network --------------------------------------------------------------------------------------------
class _Failed(SandboxError, CommandFailed):
    """A command of the sandbox failed: a SandboxError that also carries the command's stderr and exit code."""

    reason = "sandbox"


def _ip(*args: str, ok_codes: Sequence[int] = (0,)) -> proc.Result:
    return proc.run(["ip", *args], timeout=IP_TIMEOUT, ok_codes=ok_codes, error=_Failed)


def _link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def _sysctl(path: str, value: str) -> None:
    target = Path("/proc/sys") / path
    if target.exists():
        target.write_text(value)


def _range_routes() -> list[str]:
    """Routes of the main table inside the test range, the guard left out."""
    out = _ip("-4", "-o", "route", "show", "root", str(TEST_RANGE)).stdout
    guard = f"blackhole {TEST_RANGE} "
    return [line.strip() for line in out.splitlines() if line.strip() and not f"{line.strip()} ".startswith(guard)]


def _route_prefix(route: str) -> ipaddress.IPv4Network | None:
    words = route.split()
    if words and words[0] in ROUTE_TYPES:
        words = words[1:]
    try:
        return ipaddress.IPv4Network(words[0]) if words else None
    except ValueError:
        return None


def _guard_present() -> bool:
    return bool(_ip("-4", "-o", "route", "show", "exact", str(TEST_RANGE), "type", "blackhole").stdout.strip())


def _ensure_guard() -> None:
    """While any sandbox exists, traffic to the test range that no bridge takes is dropped here: it can never
    leave through the default route, also not after a bridge is gone."""
    _ip("route", "replace", "blackhole", str(TEST_RANGE), "metric", str(GUARD_METRIC))


def _ensure_bridge(state: SandboxState) -> None:
    bridge = bridge_name(state.name)
    if not _link_exists(bridge):
        _ip("link", "add", bridge, "type", "bridge")
    # Never forward what the hosts send elsewhere, even if the machine forwards on other interfaces.
    _sysctl(f"net/ipv4/conf/{bridge}/forwarding", "0")
    _sysctl(f"net/ipv6/conf/{bridge}/disable_ipv6", "1")
    # A bridge left by a crashed run of this sandbox with another subnet keeps no address (nor route) of it.
    for line in _ip("-4", "-o", "addr", "show", "dev", bridge).stdout.splitlines():
        address = line.split()[3]
        if address != f"{state.gateway}/24":
            _ip("addr", "del", address, "dev", bridge)
    _ip("addr", "replace", f"{state.gateway}/24", "dev", bridge)
    _ip("link", "set", bridge, "up")


def _check_subnet_free(state: SandboxState) -> None:
    for other in _sandbox_names():
        other_state = _load(other) if other != state.name else None
        if other_state is not None and other_state.subnet == state.subnet:
            raise SandboxError(f"subnet {state.subnet} is already used by sandbox {other!r}; give another --subnet",
                               reason="subnet-in-use")
    bridge = bridge_name(state.name)
    for route in _range_routes():
        prefix = _route_prefix(route)
        if prefix is not None and prefix.overlaps(state.net) and f" dev {bridge} " not in f" {route} ":
            raise SandboxError(f"subnet {state.subnet} is already routed on this machine ({route}); give another"
                               " --subnet", reason="subnet-in-use")


def _make_link(state: SandboxState, host: str, ip: str) -> None:
    netns, veth = netns_name(state.name, host), veth_name(state.name, host)
    if not (NETNS_DIR / netns).exists():
        _ip("netns", "add", netns)
    if _link_exists(veth):
        _ip("link", "del", veth)
    _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
    _sysctl(f"net/ipv6/conf/{veth}/disable_ipv6", "1")
    _ip("link", "set", veth, "master", bridge_name(state.name), "up")
    _ip("-n", netns, "addr", "add", f"{ip}/24", "dev", "eth0")
    _ip("-n", netns, "link", "set", "lo", "up")
    _ip("-n", netns, "link", "set", "eth0", "up")
    # Like a server's: Ansible's facts (default_ipv4) need one; the bridge never forwards (see _ensure_bridge).
    _ip("-n", netns, "route", "add", "default", "via", state.gateway)


def _tcp_sockets(dst: str, *, with_process: bool = False) -> list[str]:
    flags = "-Htanp" if with_process else "-Htan"
    out = proc.run(["ss", flags, "dst", dst], timeout=IP_TIMEOUT, error=_Failed).stdout
    return [line for line in out.splitlines() if line.strip() and not line.startswith("TIME-WAIT")]


def _kill_sockets(dst: str) -> None:
    """Abort the machine's TCP connections to `dst`: once its hosts are gone nothing would ever answer them."""
    proc.run(["ss", "-H", "-K", "-t", "dst", dst], timeout=IP_TIMEOUT, error=_Failed)


def _close_ssh_masters(dst: str) -> None:
    """Close SSH ControlPersist masters connected to `dst` (Ansible's, testinfra's) before their host goes;
    a master names its control socket in its process title: `ssh: <path> [mux]`."""
    for line in _tcp_sockets(dst, with_process=True):
        for pid in {int(p) for p in re.findall(r"pid=(\d+)", line)}:
            title = _cmdline(pid)
            if not (title.startswith("ssh: ") and title.endswith("[mux]")):
                continue
            control_path = title[len("ssh: "):-len("[mux]")].strip()
            log.info("closing the SSH master %s (pid %d)", control_path, pid)
            proc.run(["ssh", "-F", "/dev/null", "-o", f"ControlPath={control_path}", "-O", "exit", "sandbox-host"],
                     timeout=10, ok_codes=range(256))
            if not _wait_gone([pid], 2.0):
                _kill(pid, signal.SIGTERM)


def _wait_gone(pids: Sequence[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_start_time(pid) is not None for pid in pids):
            return True
        time.sleep(0.05)
    return False


def _remove_guard_if_unused() -> None:
    """The guard goes with the last sandbox, and only once no connection to the range is left."""
    leftovers = [p.name for p in NETNS_DIR.glob("pgpipe_*")] if NETNS_DIR.is_dir() else []
    if _sandbox_names() or _range_routes() or leftovers or not _guard_present():
        return
    _kill_sockets(str(TEST_RANGE))
    remaining = _tcp_sockets(str(TEST_RANGE))
    if remaining:
        log.warning("keeping the blackhole route for %s: connections to it remain: %s", TEST_RANGE, remaining)
        return
    _ip("route", "del", "blackhole", str(TEST_RANGE), "metric", str(GUARD_METRIC), ok_codes=(0, 2))
    log.info("removed the blackhole route for %s (no sandbox left)", TEST_RANGE)


# --- files of a sandbox ---------------------------------------------------------------------------------
def _keygen(path: Path, comment: str) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    proc.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], timeout=30,
             error=_Failed)


def _ensure_files(state: SandboxState) -> None:
    base = sandbox_dir(state.name)
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    ssh_dir = client_key(state.name).parent
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    _keygen(client_key(state.name), f"pgpipe-sandbox-{state.name}")
    _etc_hosts(state.name).touch(mode=0o644)


def _write_in_place(path: Path, text: str) -> None:
    """Rewrite a file that hosts bind-mount: a new inode (an atomic rename) would stay invisible to them."""
    with path.open("r+" if path.exists() else "w") as handle:
        handle.seek(0)
        handle.write(text)
        handle.truncate()


def _write_host_lists(state: SandboxState) -> None:
    """/etc/hosts of every host (all hosts by name) and the known_hosts file for the machine's ssh."""
    lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
    known = []
    for name, record in sorted(state.hosts.items()):
        lines.append(f"{record.ip} {name}")
        pub = host_dir(state.name, name) / "sshd" / "ssh_host_ed25519_key.pub"
        if pub.exists():
            key_type, key = pub.read_text().split()[:2]
            known.append(f"{record.ip},{name} {key_type} {key}")
    _write_in_place(_etc_hosts(state.name), "\n".join(lines) + "\n")
    write_atomic(known_hosts(state.name), "".join(f"{line}\n" for line in known))


def _sshd_config(state: SandboxState, host: str, ip: str) -> str:
    keys = host_dir(state.name, host) / "sshd"
    return "\n".join([
        f"# sshd of sandbox host {host} ({state.name}); written by pgpipe",
        f"ListenAddress {ip}:22",
        f"HostKey {keys / 'ssh_host_ed25519_key'}",
        "PidFile /run/sshd.pid",
        "AuthorizedKeysFile /run/pgpipe/authorized_keys",
        "AllowUsers root",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes yes",
        "X11Forwarding no",
        "PrintMotd no",
        "PrintLastLog no",
        "UseDNS no",
        "AcceptEnv LANG LC_*",
        "MaxSessions 30",
        "MaxStartups 60:30:120",
        "Subsystem sftp /usr/lib/openssh/sftp-server",
        "",
    ])


def _owner_of(path: str) -> tuple[int, int, int]:
    """Owner, group and mode of the machine's own directory, so the host's copy looks like a packaged one."""
    try:
        st = os.stat(path)
        return st.st_uid, st.st_gid, st.st_mode & 0o7777
    except FileNotFoundError:
        user = _postgres_user()
        return (user.pw_uid, user.pw_gid, 0o755) if user else (0, 0, 0o755)


def _postgres_user() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        return None


def _home(hdir: Path) -> Path:
    """root's own home, like a fresh server's: the machine's /root (its shell setup, its tools, its files)
    stays out of the host."""
    home = hdir / "root"
    home.mkdir(mode=0o700, exist_ok=True)
    for skel in Path("/etc/skel").glob(".*"):
        if skel.is_file() and not (home / skel.name).exists():
            shutil.copy2(skel, home / skel.name)
    return home


def _host_files(state: SandboxState, host: str, ip: str) -> Path:
    """The host's folder: PostgreSQL's directories, sshd's config and key; returns the init's config file."""
    hdir = host_dir(state.name, host)
    binds = []
    for local, target in PG_DIRS.items():
        path = hdir / local
        path.mkdir(parents=True, exist_ok=True)
        uid, gid, mode = _owner_of(target)
        os.chown(path, uid, gid)
        path.chmod(mode)
        binds.append([str(path), target])
    binds.append([str(_home(hdir)), "/root"])
    binds.append([str(_etc_hosts(state.name)), "/etc/hosts"])
    sshd = hdir / "sshd"
    sshd.mkdir(mode=0o700, exist_ok=True)
    _keygen(sshd / "ssh_host_ed25519_key", f"{host}@{state.name}")
    write_atomic(sshd / "sshd_config", _sshd_config(state, host, ip), mode=0o600)
    user = _postgres_user()
    config = {
        "hostname": host,
        "binds": binds,
        "sshd": SSHD,
        "sshd_config": str(sshd / "sshd_config"),
        "sshd_log": str(hdir / "sshd.log"),
        "authorized_keys": str(client_key(state.name).with_suffix(".pub")),
        "postgres_uid": user.pw_uid if user else None,
        "postgres_gid": user.pw_gid if user else None,
        # A fresh server's: the machine's own mounts are none of the host's business.
        "etc_files": {"fstab": f"# /etc/fstab of sandbox host {host} ({state.name}): private to the host\n"},
    }
    write_atomic(hdir / "init.json", dump_json(config), mode=0o600)
    return hdir / "init.json"


# --- one host -------------------------------------------------------------------------------------------
def _launch(state: SandboxState, host: str, config: Path) -> subprocess.Popen[bytes]:
    """Start the host's PID 1 in its own PID, mount, UTS and IPC namespaces inside its network namespace.
    This is a daemon, not a command to wait for, so it is the one place that bypasses proc.run; its output
    goes to the host's init.log, never to our stdout (terraform waits for that to close)."""
    netns = netns_name(state.name, host)
    argv = [proc.which("nsenter"), f"--net={NETNS_DIR / netns}", proc.which("unshare"), "--pid", "--fork",
            "--kill-child", "--mount", "--uts", "--ipc", "--propagation", "private", "--mount-proc",
            sys.executable, "-m", "pipeline.sandbox_init", str(config)]
    env = {"PATH": HOST_PATH, "LANG": "C.UTF-8", "HOME": "/root",
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    with (host_dir(state.name, host) / "init.log").open("ab") as out:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                 cwd="/", start_new_session=True)
    _launched[netns] = child
    return child


def _listening(pid: int, ip: str, port: int) -> bool:
    """Whether the host of `pid` listens on ip:port, read from its network namespace's socket table."""
    want = f"{int(ipaddress.IPv4Address(ip)).to_bytes(4, 'big')[::-1].hex().upper()}:{port:04X}"
    try:
        table = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(row.split()[1] == want and row.split()[3] == "0A" for row in table)


def _wait_ready(state: SandboxState, host: str, ip: str, child: subprocess.Popen[bytes]) -> int:
    netns = netns_name(state.name, host)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        pid1 = _find_pid1(netns)
        if pid1 is not None and _listening(pid1, ip, 22):
            return pid1
        if child.poll() is not None:
            break
        time.sleep(0.05)
    raise SandboxError(f"host {host} did not come up: {_log_tail(state.name, host)}", reason="host-failed")


def _log_tail(sandbox: str, host: str) -> str:
    lines: list[str] = []
    for name in ("init.log", "sshd.log"):
        with contextlib.suppress(OSError):
            lines += (host_dir(sandbox, host) / name).read_text(errors="replace").strip().splitlines()[-8:]
    return "\n".join(lines) or "no log"


def _start_host(state: SandboxState, host: str, ip: str) -> None:
    log.info("starting sandbox host %s (%s) in %s", host, ip, state.name)
    state.hosts[host] = HostRecord(ip=ip)
    _save(state)
    try:
        config = _host_files(state, host, ip)
        _write_host_lists(state)
        _make_link(state, host, ip)
        pid1 = _wait_ready(state, host, ip, _launch(state, host, config))
    except BaseException:
        _stop_host(state.name, host, state.hosts.pop(host, None))
        _save(state)
        raise
    state.hosts[host] = HostRecord(ip=ip, pid=pid1, start_time=_start_time(pid1))
    _save(state)
    _write_host_lists(state)


def _stop_processes(sandbox: str, host: str, record: HostRecord | None) -> None:
    """Kill the host's PID 1 (the kernel then kills its whole PID namespace), then anything else that
    entered its network namespace, and reap the launcher when this process started it."""
    netns = netns_name(sandbox, host)
    deadline = time.monotonic() + STOP_TIMEOUT
    while True:
        pids = _netns_pids(netns)
        if record is not None and record.pid is not None and _alive(record):
            pids.append(record.pid)
        if not pids:
            break
        if time.monotonic() > deadline:
            raise SandboxError(f"processes of host {host} survived SIGKILL: {sorted(pids)}", reason="stop-failed")
        for pid in sorted(pids, key=lambda p: _ns_pids(p)[-1:] != [1]):
            _kill(pid)
        time.sleep(0.05)
    child = _launched.pop(netns, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=STOP_TIMEOUT)


def _stop_host(sandbox: str, host: str, record: HostRecord | None) -> None:
    """Remove every trace of one host; each step tolerates that an earlier run left it half made."""
    netns, veth = netns_name(sandbox, host), veth_name(sandbox, host)
    _stop_processes(sandbox, host, record)
    if record is not None:
        _kill_sockets(record.ip)
    if _link_exists(veth):
        _ip("link", "del", veth, ok_codes=(0, 1))
    if (NETNS_DIR / netns).exists():
        _ip("netns", "del", netns)
    shutil.rmtree(host_dir(sandbox, host), ignore_errors=True)


# --- the API --------------------------------------------------------------------------------------------
def _plan_ips(state: SandboxState, hosts: Mapping[str, str | None]) -> dict[str, str]:
    """Each host's address: the one it runs with, the one asked for, or the next free one from .10 on."""
    plan: dict[str, str] = {}
    for host, ip in hosts.items():
        current = state.hosts.get(host)
        if ip is not None:
            ip = check_ip(ip, state.net)
            if current is not None and current.ip != ip and _alive(current):
                raise SandboxError(f"host {host} already runs with {current.ip}, not {ip}; take it down first",
                                   reason="ip-in-use")
            plan[host] = ip
        elif current is not None:
            plan[host] = current.ip
    taken = {r.ip: h for h, r in state.hosts.items() if h not in hosts}
    for host, ip in plan.items():
        owner = taken.get(ip) or next((h for h, other in plan.items() if other == ip and h != host), None)
        if owner is not None:
            raise SandboxError(f"{ip} is already the address of host {owner}", reason="ip-in-use")
        taken[ip] = host
    free = (str(state.net.network_address + i) for i in range(FIRST_HOST_OFFSET, 255))
    for host in hosts:
        if host not in plan:
            plan[host] = next(ip for ip in free if ip not in taken)
            taken[plan[host]] = host
    return plan


def up(sandbox: str, hosts: Mapping[str, str | None], subnet: str | None = None) -> dict[str, str]:
    """Make the hosts of `sandbox` (host -> ip, None for the next free address) and return host -> ip.
    Hosts that already run are left alone, so a second `up` changes nothing. Without `subnet` a sandbox
    keeps the one it has, and a new one gets `default_subnet`."""
    check_sandbox_name(sandbox)
    for host in hosts:
        check_host_name(host)
    net = check_subnet(subnet) if subnet else None
    for tool in ("ip", "ss", "nsenter", "unshare", "ssh-keygen", SSHD):
        proc.which(tool)
    with _locked():
        state = _load(sandbox) or SandboxState(name=sandbox, subnet=str(net or check_subnet(default_subnet(sandbox))))
        if net is not None and state.subnet != str(net):
            raise SandboxError(f"sandbox {sandbox!r} already uses subnet {state.subnet}, not {net}",
                               reason="subnet-in-use")
        _check_subnet_free(state)
        plan = _plan_ips(state, hosts)
        _ensure_files(state)
        _save(state)
        _ensure_guard()
        _ensure_bridge(state)
        for host, ip in plan.items():
            record = state.hosts.get(host)
            if record is not None and _alive(record) and _find_pid1(netns_name(sandbox, host)) == record.pid:
                continue
            if record is not None or (NETNS_DIR / netns_name(sandbox, host)).exists():
                _stop_host(sandbox, host, record)
                state.hosts.pop(host, None)
            _start_host(state, host, ip)
    return plan


def _leftover_hosts(sandbox: str) -> set[str]:
    prefix = netns_name(sandbox, "")
    if not NETNS_DIR.is_dir():
        return set()
    return {p.name[len(prefix):] for p in NETNS_DIR.iterdir() if p.name.startswith(prefix)}


def down(sandbox: str, host: str | None = None) -> None:
    """Remove one host, or the whole sandbox. The last host takes the sandbox's bridge and folder with it,
    and the last sandbox the guard route. Safe to repeat, and after a run that crashed half-way."""
    check_sandbox_name(sandbox)
    if host is not None:
        check_host_name(host)
    with _locked():
        state = _load(sandbox)
        records = state.hosts if state else {}
        names = [host] if host is not None else sorted(set(records) | _leftover_hosts(sandbox))
        for name in names:
            record = records.get(name)
            if record is not None:
                _close_ssh_masters(record.ip)
            _stop_host(sandbox, name, record)
            records.pop(name, None)
            log.info("sandbox host %s of %s is down", name, sandbox)
        if state is not None and state.hosts:
            _save(state)
            _write_host_lists(state)
        elif not _leftover_hosts(sandbox):
            _remove_sandbox(sandbox, state)
        _remove_guard_if_unused()


def _remove_sandbox(sandbox: str, state: SandboxState | None) -> None:
    bridge = bridge_name(sandbox)
    if _link_exists(bridge):
        _ip("link", "del", bridge)
    if state is not None:
        _kill_sockets(state.subnet)
    shutil.rmtree(sandbox_dir(sandbox), ignore_errors=True)
    log.info("sandbox %s is gone", sandbox)


def _host_status(sandbox: str, host: str, record: HostRecord) -> dict[str, Any]:
    netns, veth = netns_name(sandbox, host), veth_name(sandbox, host)
    running = _alive(record) and _find_pid1(netns) == record.pid
    state = "stopped"
    if running:
        state = "running" if _link_up(veth) else "partitioned"
    return {"ip": record.ip, "pid": record.pid if running else None, "netns": netns, "veth": veth, "state": state}


def _link_up(name: str) -> bool:
    try:
        return bool(int(Path(f"/sys/class/net/{name}/flags").read_text(), 16) & 0x1)
    except OSError:
        return False


def _sandbox_status(sandbox: str) -> dict[str, Any]:
    state = _load(sandbox)
    if state is None:
        return {"name": sandbox, "exists": False, "hosts": {}}
    return {
        "name": sandbox,
        "exists": True,
        "subnet": state.subnet,
        "gateway": state.gateway,
        "bridge": bridge_name(sandbox),
        "ssh_user": "root",
        "client_key": str(client_key(sandbox)),
        "known_hosts": str(known_hosts(sandbox)),
        "hosts": {name: _host_status(sandbox, name, rec) for name, rec in sorted(state.hosts.items())},
    }


def status(sandbox: str | None = None) -> dict[str, Any]:
    """One sandbox (`exists` false when there is none), or every sandbox by name."""
    if sandbox is not None:
        return _sandbox_status(check_sandbox_name(sandbox))
    return {name: _sandbox_status(name) for name in _sandbox_names()}


def host_pid(sandbox: str, host: str) -> int:
    """PID 1 of the host as the machine sees it: `nsenter -t <pid>` enters the host."""
    check_sandbox_name(sandbox)
    check_host_name(host)
    pid = _find_pid1(netns_name(sandbox, host))
    if pid is None:
        raise SandboxError(f"host {host} of sandbox {sandbox!r} is not running", reason="not-running")
    return pid


def exec_in(sandbox: str, host: str, argv: Sequence[str], *, timeout: float = 120.0, check: bool = False,
            stdin: str | None = None) -> proc.Result:
    """Run `argv` inside the host (all its namespaces, as root, with a plain environment). The exit code is
    returned, not judged, unless `check` is set."""
    if not argv:
        raise SandboxError("no command given", reason=BAD_INPUT)
    pid = host_pid(sandbox, host)
    env = {"PATH": HOST_PATH, "HOME": "/root", "LANG": "C.UTF-8", "USER": "root", "LOGNAME": "root"}
    return proc.run(["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "-r", "-w", "--", *argv],
                    timeout=timeout, env=env, stdin=stdin, ok_codes=(0,) if check else range(-64, 256),
                    error=_Failed)


def _host_veth(sandbox: str, host: str) -> str:
    host_pid(sandbox, host)
    return veth_name(sandbox, host)


def partition(sandbox: str, host: str) -> None:
    """Cut the host off the bridge: nothing reaches it and it reaches nothing, like a failed network link."""
    _ip("link", "set", _host_veth(sandbox, host), "down")
    log.info("host %s of %s is partitioned", host, sandbox)


def heal(sandbox: str, host: str) -> None:
    _ip("link", "set", _host_veth(sandbox, host), "up")
    log.info("host %s of %s is reconnected", host, sandbox)


def crash(sandbox: str, host: str, pattern: str, sig: int = signal.SIGKILL) -> list[int]:
    """Kill the host's processes whose command line matches the regular expression `pattern` (PID 1 aside);
    returns their pids as the machine sees them. Only processes of that host's PID namespace are candidates."""
    try:
        wanted = re.compile(pattern)
    except re.error as exc:
        raise SandboxError(f"pattern {pattern!r} is not a regular expression: {exc}", reason=BAD_INPUT) from None
    pid1 = host_pid(sandbox, host)
    try:
        ref = os.stat(f"/proc/{pid1}/ns/pid")
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise SandboxError(f"host {host} stopped", reason="not-running") from None
        raise
    victims = [pid for pid in _all_pids() if pid != pid1 and _same_ns(pid, "pid", ref)
               and wanted.search(_cmdline(pid))]
    if not victims:
        raise SandboxError(f"no process of host {host} matches {pattern!r}", reason="no-match")
    for pid in victims:
        _kill(pid, sig)
    log.info("host %s of %s: sent signal %d to %s", host, sandbox, sig, victims)
    return victims
