"""The template catalog: shipped defaults seeded on first start, looked up by name."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from tether.core.models import Template
from tether.core.ports import Store
from tether.errors import Conflict, NotFound
from tether.service.repo import Repo

DEFAULT_TEMPLATES = (
    Template(
        name="python",
        display_name="Python",
        description="A Python 3.11 workspace",
        category="development",
        image="python:3.11-slim",
    ),
    Template(
        name="shell",
        display_name="Shell",
        description="A plain shell workspace",
        category="development",
        image="debian:bookworm-slim",
    ),
)


@dataclass
class Templates:
    store: Store

    def __post_init__(self) -> None:
        self.repo = Repo(self.store, "templates", Template)

    def seed(self) -> None:
        for template in DEFAULT_TEMPLATES:
            if self.repo.find(template.name) is None:
                with contextlib.suppress(Conflict):  # seeded concurrently by another instance
                    self.repo.create(template.name, template.model_copy())

    def get(self, name: str) -> Template:
        template = self.repo.find(name)
        if template is None:
            raise NotFound(f"Template '{name}' does not exist", field="template")
        return template

    def list(self) -> list[Template]:
        return self.repo.query(order_by="name")
