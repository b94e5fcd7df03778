"""A PostgreSQL cluster made by the postgresql_replication role, as testinfra hosts: the host of inventory
group `primary` and those of `replicas`, reached over the same SSH path Ansible used, with SQL run as the
postgres OS user the way the verify stage runs it."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any

from testinfra.utils.ansible_runner import AnsibleRunner

PSQL = "psql --no-psqlrc --no-align --tuples-only --quiet --set=ON_ERROR_STOP=1 --dbname=postgres"


@dataclass(frozen=True)
class Node:
    """One host of the cluster: its inventory name, the address it replicates over, its testinfra host."""

    name: str
    address: str
    host: Any = field(repr=False)

    def run(self, command: str, *args: str) -> Any:
        return self.host.run(command, *args)

    def psql(self, sql: str) -> Any:
        """Run SQL as the postgres OS user, the way the verify stage does (`su postgres -c psql`)."""
        return self.host.run("su postgres -s /bin/sh -c %s", f"{PSQL} --command={shlex.quote(sql)}")

    def sql(self, sql: str) -> str:
        result = self.psql(sql)
        assert result.rc == 0, f"{self.name}: {sql!r} failed: {result.stderr}"
        return str(result.stdout).strip()

    def sql_json(self, sql: str) -> Any:
        return json.loads(self.sql(sql))


@dataclass(frozen=True)
class Cluster:
    primary: Node
    replicas: list[Node]
    settings: dict[str, Any]

    @property
    def nodes(self) -> list[Node]:
        return [self.primary, *self.replicas]


def _typed(value: Any) -> Any:
    """INI [all:vars] values arrive as text; JSON text becomes what it says."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value  # a Jinja template, say
    return value


def _node(runner: AnsibleRunner, name: str) -> Node:
    hostvars = runner.get_variables(name)
    address = str(hostvars.get("postgresql_replication_address") or hostvars.get("ansible_host") or name)
    host = runner.get_host(name)
    assert host is not None, f"testinfra cannot reach {name} over SSH"
    return Node(name=name, address=address, host=host)


def load(inventory: str) -> Cluster:
    """The cluster of an Ansible inventory: its one `primary` host and its `replicas`."""
    runner = AnsibleRunner.get_runner(inventory)
    primaries = runner.get_hosts("primary")
    assert len(primaries) == 1, f"the inventory must have exactly one host in group primary, not {primaries}"
    replicas = runner.get_hosts("replicas")
    settings = {key: _typed(value) for key, value in runner.get_variables(primaries[0]).items()
                if key.startswith("postgresql_replication_")}
    return Cluster(primary=_node(runner, primaries[0]), replicas=[_node(runner, r) for r in replicas],
                   settings=settings)


def slot_name(host_name: str) -> str:
    """The role's slot naming: lower case, anything outside [a-z0-9_] turned into '_'."""
    return "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in host_name.lower())
