"""What the backend offers: templates and the languages found on this machine."""

from __future__ import annotations

import shutil
import sys
from typing import Any

from ..errors import ApiError, bad_request

__all__ = ["TEMPLATES", "Catalog", "find_template", "template_or_404"]

TEMPLATES: tuple[dict[str, Any], ...] = (
    {
        "id": "1",
        "name": "code-interpreter",
        "display_name": "Code Interpreter",
        "description": "Python, bash and (when installed) JavaScript/Go, run as local processes",
        "category": "development",
        "language": "python",
        "is_active": True,
        "is_public": True,
        "status": "active",
        "object": "template",
        "default_resources": {"vcpu": 2, "memory_mb": 2048, "disk_gb": 10},
        "features": ["background_execution", "commands", "env"],
        "tags": ["local"],
    },
    {
        "id": "2",
        "name": "base",
        "display_name": "Base",
        "description": "A bare workspace; the same languages as code-interpreter",
        "category": "operating-system",
        "language": "bash",
        "is_active": True,
        "is_public": True,
        "status": "active",
        "object": "template",
        "default_resources": {"vcpu": 2, "memory_mb": 2048, "disk_gb": 10},
        "features": ["background_execution", "commands", "env"],
        "tags": ["local"],
    },
)

_LANGUAGE_ALIASES = {
    "python": "python",
    "python3": "python",
    "bash": "bash",
    "sh": "bash",
    "shell": "bash",
    "javascript": "javascript",
    "js": "javascript",
    "node": "javascript",
    "nodejs": "javascript",
    "go": "go",
    "golang": "go",
}


def find_template(name_or_id: str) -> dict[str, Any] | None:
    for template in TEMPLATES:
        if name_or_id in (template["name"], template["id"]):
            return template
    return None


def template_or_404(name_or_id: str) -> dict[str, Any]:
    template = find_template(name_or_id)
    if template is None:
        names = ", ".join(t["name"] for t in TEMPLATES)
        raise ApiError(
            404, "RESOURCE_NOT_FOUND", f"template {name_or_id!r} not found; available: {names}"
        )
    return template


class Catalog:
    """The languages this machine can run: canonical name -> interpreter path."""

    def __init__(self) -> None:
        found = {"python": sys.executable, "bash": shutil.which("bash") or "/bin/bash"}
        for language, program in (("javascript", "node"), ("go", "go")):
            path = shutil.which(program)
            if path:
                found[language] = path
        self.languages = found

    def resolve_language(self, language: str) -> str:
        canonical = _LANGUAGE_ALIASES.get(language.lower())
        if canonical is None or canonical not in self.languages:
            available = ", ".join(sorted(self.languages))
            raise bad_request(f"unsupported language {language!r}; available here: {available}")
        return canonical
