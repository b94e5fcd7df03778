"""PID 1 of a sandbox host. Started by `pipeline.sandbox` inside the host's network, PID, mount, UTS and IPC
namespaces, it gives the host its private mounts (/run, /etc, PostgreSQL's directories) and hostname, starts the
host's sshd and then reaps orphans until it is told to stop. It is Python, not a shell, so Ansible does not
take the host for a systemd one."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipeline import proc

MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MNT_DETACH = 0x2
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
GRACE_SECONDS = 2.0
ETC_UPPER = "/run/pgpipe/etc/upper"
ETC_WORK = "/run/pgpipe/etc/work"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def say(message: str) -> None:
    """The host's own log (its stdout is the host's init.log)."""
    print(f"pgpipe-init: {message}", flush=True)


def mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    rc = _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                     data.encode() if data else None)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def detach_foreign_mounts() -> None:
    """Drop the copies of namespace files (`ip netns` mounts under /run/netns) and of everything under /run
    that this mount namespace inherited: a copy would keep another host's network namespace, and with it
    its veth, alive after that host is gone."""
    doomed: list[str] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        target = _unescape(fields[4])
        fstype = fields[fields.index("-") + 1]
        if fstype == "nsfs" or target.startswith("/run/"):
            doomed.append(target)
    for target in sorted(doomed, key=len, reverse=True):
        if _libc.umount2(target.encode(), MNT_DETACH) != 0:
            say(f"could not detach {target}: {os.strerror(ctypes.get_errno())}")


def make_dir(path: str, mode: int, uid: int = 0, gid: int = 0) -> None:
    os.makedirs(path, exist_ok=True)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def private_run(cfg: dict[str, Any]) -> None:
    """A fresh /run: no /run/systemd/system (pg_ctlcluster then works without systemd), sshd's privilege
    separation directory, the PostgreSQL socket directory and the authorised key outside any world-writable
    directory (sshd's StrictModes checks every directory above it)."""
    mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    make_dir("/run/sshd", 0o755)
    make_dir("/run/lock", 0o1777)
    make_dir("/run/pgpipe", 0o700)
    pg_uid, pg_gid = cfg.get("postgres_uid"), cfg.get("postgres_gid")
    if pg_uid is not None and pg_gid is not None:
        make_dir("/run/postgresql", 0o2775, pg_uid, pg_gid)
    Path("/run/utmp").touch(mode=0o664)
    shutil.copyfile(cfg["authorized_keys"], "/run/pgpipe/authorized_keys")
    os.chmod("/run/pgpipe/authorized_keys", 0o600)


def private_etc(cfg: dict[str, Any]) -> None:
    """A private /etc: an overlay of the machine's, whose changes land in the host's /run and die with it, so
    what the host writes there (its /etc/fstab entries, say) never reaches the machine. A bind-mounted file
    would not do: tools replace files by renaming over them, which a mount point refuses (EBUSY). The upper
    layer lives on tmpfs, because an overlay cannot be the upper layer of another (a container's root)."""
    make_dir(ETC_UPPER, 0o755)
    make_dir(ETC_WORK, 0o700)
    mount("overlay", "/etc", "overlay", 0, f"lowerdir=/etc,upperdir={ETC_UPPER},workdir={ETC_WORK}")
    for name, text in cfg.get("etc_files", {}).items():
        Path("/etc", name).write_text(text)


def prepare(cfg: dict[str, Any]) -> None:
    detach_foreign_mounts()
    private_run(cfg)
    private_etc(cfg)
    # A private /dev/shm: PostgreSQL's dynamic shared memory of one host never meets another's.
    mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")  # noqa: S108
    # A sysfs mounted in this network namespace lists the host's own interfaces (Ansible's facts read it).
    mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for source, target in cfg["binds"]:
        if not os.path.exists(target):
            os.makedirs(target, exist_ok=True)
        mount(source, target, None, MS_BIND)
    socket.sethostname(cfg["hostname"])


def start_sshd(cfg: dict[str, Any]) -> int:
    """sshd runs in the foreground as a child of PID 1, which reaps it and its orphans. A daemon, not a
    command to wait for: proc.run would wait for output pipes that sshd keeps open for its whole life."""
    sshd = subprocess.Popen(
        [proc.which(cfg["sshd"]), "-D", "-f", cfg["sshd_config"], "-E", cfg["sshd_log"]],
        stdin=subprocess.DEVNULL,
        stdout=sys.stdout,
        stderr=subprocess.STDOUT,
    )
    return sshd.pid


def reap(sshd_pid: int = 0) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid == sshd_pid:
            say(f"sshd ended ({os.waitstatus_to_exitcode(status)}); the host takes no new logins")


def serve(sshd_pid: int) -> None:
    """Reap orphans until a stop signal arrives; signals are taken synchronously, so no handler races."""
    for sig in STOP_SIGNALS:
        # A handler is needed at all: PID 1 of a namespace never receives signals left at their default.
        signal.signal(sig, lambda *_: None)
    watched = STOP_SIGNALS | {signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    reap(sshd_pid)
    while True:
        received = signal.sigwait(watched)
        reap(sshd_pid)
        if received in STOP_SIGNALS:
            return


def shutdown() -> None:
    """Ask every process of the host to stop; whatever is left when PID 1 exits is killed by the kernel."""
    try:
        os.kill(-1, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + GRACE_SECONDS
    while time.monotonic() < deadline:
        reap()
        try:
            os.kill(-1, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or os.getpid() != 1:
        print("usage: python -m pipeline.sandbox_init CONFIG (as PID 1 of a new PID namespace)", file=sys.stderr)
        return 2
    cfg = json.loads(Path(argv[1]).read_text())
    prepare(cfg)
    sshd_pid = start_sshd(cfg)
    say(f"host {cfg['hostname']} started sshd (pid {sshd_pid})")
    serve(sshd_pid)
    say("stopping")
    shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
