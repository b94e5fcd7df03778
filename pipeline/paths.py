"""Where pgpipe's own files live: templates, the role, playbooks (next to the package)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(os.environ.get("PGPIPE_HOME", Path(__file__).resolve().parent.parent))
TEMPLATES = PROJECT_ROOT / "templates"
ROLES = PROJECT_ROOT / "roles"
PLAYBOOKS = PROJECT_ROOT / "playbooks"
