"""The report as typed sections rendered through a jinja2 template, with autoescaping on.

A section holds paragraphs, tables and figures as separate typed lists, so nothing is told apart
by looking at a string; every text is escaped by the template, never by hand.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import jinja2


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class FigureRef:
    caption: str
    path: Path

    @property
    def data_uri(self) -> str:
        """The PNG embedded as a data: URI, so that the page is self-contained."""
        return "data:image/png;base64," + base64.b64encode(self.path.read_bytes()).decode("ascii")


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[FigureRef] = field(default_factory=list)


@dataclass
class Page:
    title: str
    intro: str
    settings: Table
    summary: list[str]
    results: Table
    sections: list[Section]


def render(page: Page) -> str:
    """The page as HTML, from templates/report.html.j2."""
    source = resources.files("vaelens.experiments").joinpath("templates/report.html.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.from_string(source).render(page=page)
