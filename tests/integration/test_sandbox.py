"""Sandbox hosts for real: network namespaces on a bridge, sshd, private mounts, PostgreSQL inside a host,
partition and crash, the guard route, and `down` leaving nothing behind (also after a crash half-way)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pipeline import sandbox
from pipeline.errors import SandboxError
from pipeline.spec import parse_spec

if TYPE_CHECKING:
    from tests.integration.conftest import Sandbox

pytestmark = [pytest.mark.integration, pytest.mark.sandbox]

MAIN_SUBNET = "198.19.251.0/24"
OTHER_SUBNET = "198.19.252.0/24"
MakeSandbox = Callable[..., "Sandbox"]


# --- helpers ----------------------------------------------------------------------------------------------
def reachable(ip: str, port: int = 22) -> bool:
    """From the machine: does ip:port answer within a second?"""
    try:
        with socket.create_connection((ip, port), timeout=1):
            return True
    except OSError:
        return False


def reaches(box: Sandbox, host: str, target: str) -> bool:
    """From inside `host`: does target:22 greet like an SSH server within two seconds?"""
    probe = f"exec 3<>/dev/tcp/{target}/22 && head -c 7 <&3"
    result = box.exec(host, "timeout", "2", "bash", "-c", probe)
    return result.returncode == 0 and result.stdout == "SSH-2.0"


def guard_route() -> bool:
    out = subprocess.run(["ip", "-4", "route", "show", "exact", "198.18.0.0/15", "type", "blackhole"],
                         capture_output=True, text=True, check=True).stdout
    return bool(out.strip())


def other_sandbox_routes() -> list[str]:
    out = subprocess.run(["ip", "-4", "-o", "route", "show", "root", "198.18.0.0/15"],
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if not line.startswith("blackhole")]


def host_processes(name: str, hosts: list[str]) -> dict[int, str]:
    """pid -> /proc/<pid>/stat of every process in the sandbox's hosts, to find them again after down."""
    found: dict[int, str] = {}
    for host in hosts:
        for pid in sandbox._netns_pids(sandbox.netns_name(name, host)):
            found[pid] = stat_of(pid)
    return found


def stat_of(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text()


def still_running(processes: dict[int, str]) -> list[int]:
    """The processes (pid -> stat taken earlier) that still run: same start time, not a zombie."""
    alive = []
    for pid, stat in processes.items():
        try:
            now = stat_of(pid).rsplit(")", 1)[1].split()
        except OSError:
            continue
        if now[19] == stat.rsplit(")", 1)[1].split()[19] and now[0] != "Z":
            alive.append(pid)
    return alive


def assert_nothing_left(name: str, hosts: list[str], subnet: str, processes: dict[int, str]) -> None:
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert f"pgpipe_{name}_" not in netns
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    for link in [sandbox.bridge_name(name), *(sandbox.veth_name(name, h) for h in hosts)]:
        assert f" {link}:" not in links and f" {link}@" not in links, link
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True, check=True).stdout
    assert subnet not in routes
    mounts = Path("/proc/mounts").read_text()
    assert f"pgpipe_{name}_" not in mounts and f"/{name}/" not in mounts
    assert not still_running(processes)
    own_files = str(sandbox.sandbox_dir(name))
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and own_files in sandbox._cmdline(int(pid))]
    assert not sandbox.sandbox_dir(name).exists()
    assert name not in sandbox.status()


# --- the guard route (first: it needs a moment when this file's own sandboxes are not up) -----------------
def test_the_guard_route_lives_exactly_as_long_as_a_sandbox(make_sandbox: MakeSandbox) -> None:
    box = make_sandbox("tsb-guard", ["solo"])
    assert box.subnet == parse_spec({"name": "tsb-guard", "target": "local"}).sandbox_subnet
    assert guard_route()
    sandbox.down("tsb-guard")
    assert guard_route() == bool(other_sandbox_routes()), "the guard must go with the last sandbox, not before"


# --- one sandbox of three hosts, shared by the tests below -------------------------------------------------
@pytest.fixture(scope="module")
def main(make_sandbox: MakeSandbox) -> Sandbox:
    return make_sandbox("tsb-main", ["a", "b", "c"], MAIN_SUBNET)


def test_up_gives_the_hosts_addresses_from_10_on(main: Sandbox) -> None:
    assert main.ips == {"a": "198.19.251.10", "b": "198.19.251.11", "c": "198.19.251.12"}
    assert {h["state"] for h in sandbox.status("tsb-main")["hosts"].values()} == {"running"}


def test_each_host_answers_ssh_with_the_client_key_and_its_own_hostname(main: Sandbox) -> None:
    for host in main.ips:
        result = main.ssh(host, "hostname; whoami")
        assert (result.returncode, result.stdout.split()) == (0, [host, "root"]), result.stderr


def test_hosts_reach_each_other_by_address_and_by_name(main: Sandbox) -> None:
    assert reaches(main, "a", main.ips["b"])
    assert reaches(main, "c", "a")


def test_a_host_has_its_own_postgresql_directories_run_home_and_pid_1(main: Sandbox) -> None:
    main.exec("a", "touch", "/var/lib/postgresql/only-on-a", "/etc/postgresql/only-on-a")
    assert main.exec("a", "ls", "/var/lib/postgresql", "/etc/postgresql").stdout.count("only-on-a") == 2
    assert "only-on-a" not in main.exec("b", "ls", "/var/lib/postgresql", "/etc/postgresql").stdout
    assert not Path("/var/lib/postgresql/only-on-a").exists()
    assert main.exec("a", "stat", "-c", "%U %a", "/run/postgresql").stdout.split() == ["postgres", "2775"]
    assert main.exec("a", "test", "-e", "/run/systemd/system").returncode == 1
    assert main.exec("a", "cat", "/proc/1/comm").stdout.startswith("python")
    assert main.exec("a", "ls", "-A", "/root").stdout.split() == sorted(p.name for p in Path("/etc/skel").iterdir())


def test_a_host_has_its_own_etc_and_fstab_which_tools_may_replace(main: Sandbox) -> None:
    machine_fstab = Path("/etc/fstab").read_text()
    # sed -i replaces the file by a rename, as Ansible's modules do: a bind-mounted file would refuse it.
    edit = main.exec("a", "sed", "-i", r"$a UUID=0 /var/lib/postgresql ext4 defaults 0 2", "/etc/fstab")
    assert edit.returncode == 0, edit.stderr
    main.exec("a", "touch", "/etc/only-on-a")
    assert "UUID=0 /var/lib/postgresql" in main.exec("a", "cat", "/etc/fstab").stdout
    assert "UUID=0" not in main.exec("b", "cat", "/etc/fstab").stdout
    assert main.exec("b", "test", "-e", "/etc/only-on-a").returncode == 1
    assert Path("/etc/fstab").read_text() == machine_fstab
    assert not Path("/etc/only-on-a").exists()


def test_postgresql_clusters_are_independent_and_listen_only_where_configured(main: Sandbox) -> None:
    for host in ("a", "b"):
        created = main.exec(host, "su", "postgres", "-c", "pg_createcluster 15 main --start", timeout=120)
        assert created.returncode == 0, created.stderr
    assert not reachable(main.ips["a"], 5432), "a new cluster listens on localhost only"
    a_ip = main.ips["a"]
    main.exec("a", "su", "postgres", "-c", f"psql -XAtc \"ALTER SYSTEM SET listen_addresses = '{a_ip}'\"")
    main.exec("a", "sh", "-c", f"echo 'host all all {MAIN_SUBNET} trust' >> /etc/postgresql/15/main/pg_hba.conf")
    assert main.exec("a", "pg_ctlcluster", "15", "main", "restart", timeout=60).returncode == 0
    main.exec("a", "su", "postgres", "-c", "psql -XAtc 'CREATE DATABASE made_on_a'")
    remote = main.exec("b", "psql", "-XAt", "-h", "a", "-U", "postgres", "-c", "SELECT datname FROM pg_database")
    local = main.exec("b", "su", "postgres", "-c", "psql -XAtc 'SELECT datname FROM pg_database'")
    assert "made_on_a" in remote.stdout.split(), remote.stderr
    assert "made_on_a" not in local.stdout.split() and "postgres" in local.stdout.split()
    assert not reachable(main.ips["b"], 5432)


def test_partition_cuts_a_host_off_and_heal_restores_it(main: Sandbox) -> None:
    sandbox.partition("tsb-main", "b")
    try:
        assert sandbox.status("tsb-main")["hosts"]["b"]["state"] == "partitioned"
        assert not reachable(main.ips["b"])
        assert not reaches(main, "a", main.ips["b"])
        assert not reaches(main, "b", main.ips["a"])
    finally:
        sandbox.heal("tsb-main", "b")
    assert reaches(main, "a", main.ips["b"]) and reachable(main.ips["b"])


def test_crash_kills_the_matching_processes_of_that_host_only(main: Sandbox) -> None:
    for host in ("a", "b"):
        main.exec(host, "sh", "-c", "sleep 4242 >/dev/null 2>&1 &")
    killed = sandbox.crash("tsb-main", "a", r"^sleep 4242$")
    assert len(killed) == 1
    assert main.exec("a", "pgrep", "-f", "^sleep 4242$").returncode == 1
    assert main.exec("b", "pgrep", "-f", "^sleep 4242$").returncode == 0
    assert main.ssh("a", "true").returncode == 0, "crash must spare the host's sshd"
    sandbox.crash("tsb-main", "b", r"^sleep 4242$")
    with pytest.raises(SandboxError, match="no process"):
        sandbox.crash("tsb-main", "a", r"^sleep 4242$")


def test_a_second_up_changes_nothing(main: Sandbox) -> None:
    before = sandbox.status("tsb-main")
    assert sandbox.up("tsb-main", dict.fromkeys(main.ips), MAIN_SUBNET) == main.ips
    assert sandbox.up("tsb-main", {"a": None}) == {"a": main.ips["a"]}, "without a subnet it keeps its own"
    assert sandbox.status("tsb-main") == before


def test_the_cli_prints_status_as_json_and_passes_exec_exit_codes_through(main: Sandbox) -> None:
    cli = [sys.executable, "-m", "pipeline", "sandbox"]
    status = subprocess.run([*cli, "status", "--sandbox", "tsb-main"], capture_output=True, text=True, check=True)
    assert {h: v["ip"] for h, v in json.loads(status.stdout)["hosts"].items()} == main.ips
    ran = subprocess.run([*cli, "exec", "--sandbox", "tsb-main", "--host", "c", "--", "sh", "-c", "hostname; exit 7"],
                         capture_output=True, text=True)
    assert (ran.returncode, ran.stdout) == (7, "c\n")


def test_two_sandboxes_live_side_by_side_and_apart(main: Sandbox, make_sandbox: MakeSandbox) -> None:
    other = make_sandbox("tsb-other", ["a"], OTHER_SUBNET)
    assert other.ips == {"a": "198.19.252.10"}
    assert other.ssh("a", "hostname").stdout.strip() == "a"
    assert main.ssh("a", "hostname").returncode == 0
    assert not reaches(main, "a", other.ips["a"]), "the machine never forwards between sandboxes"


def test_a_subnet_in_use_is_refused_clearly(main: Sandbox) -> None:
    with pytest.raises(SandboxError, match=re.escape("198.19.251.0/24 is already used by sandbox 'tsb-main'")) as err:
        sandbox.up("tsb-clash", {"x": None}, MAIN_SUBNET)
    assert err.value.reason == "subnet-in-use"
    assert not sandbox.sandbox_dir("tsb-clash").exists()


@pytest.mark.parametrize(
    ("name", "hosts", "subnet", "message"),
    [
        ("Bad_Name", {"a": None}, None, "not a DNS label"),
        ("tsb-bad", {"-a": None}, None, "not a DNS label"),
        ("tsb-bad", {"a": None}, "10.0.0.0/24", "inside 198.18.0.0/15"),
        ("tsb-bad", {"a": None}, "198.18.0.0/16", "must be a /24"),
        ("tsb-bad", {"a": "8.8.8.8"}, "198.19.253.0/24", "outside 198.18.0.0/15"),
        ("tsb-bad", {"a": "198.19.9.10"}, "198.19.253.0/24", "not a host address of the sandbox's subnet"),
        ("tsb-bad", {"a": "198.19.253.1"}, "198.19.253.0/24", "not a host address"),
        ("tsb-bad", {"a": "198.19.253.10", "b": "198.19.253.10"}, "198.19.253.0/24", "already the address"),
    ],
)
def test_bad_names_subnets_and_addresses_are_refused(
    make_sandbox: MakeSandbox, name: str, hosts: dict[str, str | None], subnet: str | None, message: str
) -> None:
    with pytest.raises(SandboxError, match=re.escape(message)):
        sandbox.up(name, hosts, subnet)
    assert not sandbox.sandbox_dir("tsb-bad").exists()


# --- down -----------------------------------------------------------------------------------------------
@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A folder with a short path: a control socket's path must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="tsb-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_down_of_one_host_closes_its_ssh_masters_and_keeps_the_others(make_sandbox: MakeSandbox,
                                                                       short_tmp: Path) -> None:
    box = make_sandbox("tsb-part", ["x", "y"], "198.19.254.0/24")
    tmp_path = short_tmp
    control = f"ControlPath={tmp_path}/cp-%C"
    master = ["-o", "ControlMaster=auto", "-o", "ControlPersist=120", "-o", control]
    subprocess.run([*box.ssh_args("y")[:1], *master, *box.ssh_args("y")[1:], "true"], check=True, timeout=30)
    masters = {int(p): stat_of(int(p)) for p in os.listdir("/proc")
               if p.isdigit() and re.fullmatch(rf"ssh: {tmp_path}/cp-\w+ \[mux\]", sandbox._cmdline(int(p)))}
    assert len(masters) == 1
    sandbox.down("tsb-part", "y")
    assert not still_running(masters), "the ControlPersist master must be closed with its host"
    assert set(sandbox.status("tsb-part")["hosts"]) == {"x"}
    assert box.ssh("x", "hostname").stdout.strip() == "x"
    assert not reachable(box.ips["y"])
    assert "pgpipe_tsb-part_y" not in subprocess.run(["ip", "netns"], capture_output=True, text=True).stdout


def test_terraform_style_parallel_up_and_down_leave_nothing_behind(claim_sandbox: Callable[[str], None]) -> None:
    """Like the local target's null_resources: one CLI call per host, all at once, for up and for down."""
    claim_sandbox("tsb-tf")
    hosts = {"tf-primary": "198.19.255.10", "tf-replica-1": "198.19.255.11", "tf-replica-2": "198.19.255.12"}
    cli = [sys.executable, "-m", "pipeline", "sandbox"]
    ups = [subprocess.Popen([*cli, "up", "--sandbox", "tsb-tf", "--subnet", "198.19.255.0/24", "--host", h,
                             "--ip", ip], stdout=subprocess.PIPE, stderr=subprocess.PIPE) for h, ip in hosts.items()]
    assert [p.wait(60) for p in ups] == [0, 0, 0], [p.stderr.read() for p in ups if p.stderr]
    status = sandbox.status("tsb-tf")
    assert {h: v["ip"] for h, v in status["hosts"].items()} == hosts
    assert {v["state"] for v in status["hosts"].values()} == {"running"}
    processes = host_processes("tsb-tf", list(hosts))
    assert len(processes) >= 6
    downs = [subprocess.Popen([*cli, "down", "--sandbox", "tsb-tf", "--host", h], stderr=subprocess.PIPE)
             for h in hosts]
    assert [p.wait(60) for p in downs] == [0, 0, 0], [p.stderr.read() for p in downs if p.stderr]
    assert_nothing_left("tsb-tf", list(hosts), "198.19.255.0/24", processes)


def test_down_cleans_up_after_a_crash_half_way(make_sandbox: MakeSandbox) -> None:
    make_sandbox("tsb-crash", ["p", "q"], "198.19.250.0/24")
    processes = host_processes("tsb-crash", ["p", "q"])
    # As if `up` died half-way: the state file is gone, one host's PID 1 is dead, a namespace has no host yet.
    (sandbox.sandbox_dir("tsb-crash") / "sandbox.json").unlink()
    os.kill(sandbox.host_pid("tsb-crash", "p"), 9)
    subprocess.run(["ip", "netns", "add", sandbox.netns_name("tsb-crash", "r")], check=True)
    sandbox.down("tsb-crash")
    assert_nothing_left("tsb-crash", ["p", "q", "r"], "198.19.250.0/24", processes)
