"""The live cluster under test, read from the Ansible inventory given to pytest-testinfra (`--ansible-inventory`).

Run by Molecule's verifier, or by hand against any cluster the role configured:
    pytest tests/infra --ansible-inventory .pgpipe/demo/inventory.ini
with the cluster's secrets in PGPIPE_REPLICATION_PASSWORD and PGPIPE_ADMIN_PASSWORD for the secret checks.
"""

from __future__ import annotations

import pytest
from pg_cluster import Cluster, load


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Cluster:
    inventory = request.config.getoption("ansible_inventory")
    if not inventory:
        pytest.skip("give the cluster's inventory: --ansible-inventory PATH")
    return load(inventory)
