#!/usr/bin/python
"""Ansible module: everything the role must know about a host before it acts, read in one round trip.

It changes nothing: which packages are missing, whether the cluster's configuration and data directory exist,
whether the data directory is a standby's (standby.signal), whether the server answers, and the data
directory's system identifier (pg_controldata, which needs no running server).
"""

from __future__ import annotations

import os
import re

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: postgresql_replication_probe
short_description: Read a PostgreSQL host's state for the postgresql_replication role.
description: Reads, never changes. One call replaces a handful of stat and command tasks.
options:
  packages:
    description: Debian packages that must be installed (checked with dpkg-query); empty skips the check.
    type: list
    elements: str
    default: []
  conf_file:
    description: The cluster's postgresql.conf.
    type: path
    required: true
  data_dir:
    description: The cluster's data directory.
    type: path
    required: true
  bin_dir:
    description: Directory of pg_isready and pg_controldata.
    type: path
    required: true
  port:
    description: The server's port.
    type: int
    default: 5432
"""

RETURN = r"""
missing_packages: {description: Packages not installed, type: list, returned: always}
conf_exists: {description: postgresql.conf exists, type: bool, returned: always}
initialised: {description: The data directory holds PG_VERSION, type: bool, returned: always}
standby: {description: The data directory holds standby.signal, type: bool, returned: always}
running: {description: pg_isready got an answer (accepting, or starting), type: bool, returned: always}
system_identifier: {description: From pg_controldata; empty when unreadable, type: str, returned: always}
"""

SYSID_RE = re.compile(r"^Database system identifier:\s*(\d+)\s*$", re.MULTILINE)


def missing_packages(module: AnsibleModule, packages: list[str]) -> list[str]:
    if not packages:
        return []
    _rc, out, _err = module.run_command(["dpkg-query", "--show", "--showformat=${Package} ${db:Status-Abbrev}\n",
                                         *packages])
    installed = {line.split()[0] for line in out.splitlines() if len(line.split()) > 1 and line.split()[1] == "ii"}
    return [name for name in packages if name not in installed]


def server_answers(module: AnsibleModule, bin_dir: str, port: int) -> bool:
    tool = os.path.join(bin_dir, "pg_isready")
    if not os.access(tool, os.X_OK):
        return False
    rc, _out, _err = module.run_command([tool, "--quiet", f"--port={port}"])
    return rc in (0, 1)  # 0 accepting connections, 1 starting up or rejecting: running either way


def system_identifier(module: AnsibleModule, bin_dir: str, data_dir: str) -> str:
    tool = os.path.join(bin_dir, "pg_controldata")
    if not os.access(tool, os.X_OK) or not os.path.exists(os.path.join(data_dir, "global", "pg_control")):
        return ""
    rc, out, _err = module.run_command([tool, data_dir], environ_update={"LC_ALL": "C"})
    match = SYSID_RE.search(out) if rc == 0 else None
    return match.group(1) if match else ""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "packages": {"type": "list", "elements": "str", "default": []},
            "conf_file": {"type": "path", "required": True},
            "data_dir": {"type": "path", "required": True},
            "bin_dir": {"type": "path", "required": True},
            "port": {"type": "int", "default": 5432},
        },
        supports_check_mode=True,
    )
    params = module.params
    data_dir = params["data_dir"]
    module.exit_json(
        changed=False,
        missing_packages=missing_packages(module, params["packages"]),
        conf_exists=os.path.exists(params["conf_file"]),
        initialised=os.path.exists(os.path.join(data_dir, "PG_VERSION")),
        standby=os.path.exists(os.path.join(data_dir, "standby.signal")),
        running=server_answers(module, params["bin_dir"], params["port"]),
        system_identifier=system_identifier(module, params["bin_dir"], data_dir),
    )


if __name__ == "__main__":
    main()
