"""Jinja2 rendering with the house rules: a missing value fails at render time, output ends with a newline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2

from pipeline.paths import TEMPLATES


def environment(root: Path = TEMPLATES) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 - renders HCL and INI, never HTML
    )
    env.filters["tojson"] = lambda value: json.dumps(value, sort_keys=True)
    return env


def render(template: str, context: dict[str, Any], root: Path = TEMPLATES) -> str:
    return environment(root).get_template(template).render(**context)
