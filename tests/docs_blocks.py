"""The code examples of the documentation, as the tests that check them see them.

:func:`page_blocks` reads the ``code-block`` and ``literalinclude`` directives of a page of
``docs/`` or of one of its folders (with a literalinclude's text cut as Sphinx cuts it);
:func:`docstring_blocks` the ``::`` literal blocks of the docstrings that autodoc renders.
``tests/test_doc_examples.py`` and ``tests/test_tutorial.py`` use them, so that the docs and
the tests cannot drift apart.
"""

from __future__ import annotations

import importlib
import inspect
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

_DIRECTIVE = re.compile(
    r"^(?P<indent> *)\.\. (?P<name>code-block|code|sourcecode|literalinclude)::(?P<arg>.*)$"
)
_OPTION = re.compile(r"^:(?P<name>[a-z-]+):(?P<value>.*)$")
_AUTODOC = re.compile(r"^ *\.\. auto(?:module|class|function)::\s*(?P<name>\S+)", re.M)
# The literalinclude options the extractor understands; any other fails the tests rather than
# being ignored (the text would then differ from what Sphinx shows).
_INCLUDE_OPTIONS = {"language", "caption", "start-after", "end-before", "dedent", "name"}


@dataclass(frozen=True)
class Block:
    """One code example: where it is, its language, and its text as the reader sees it."""

    page: str  # "quickstart.rst", "providers/openai.rst", or "docstring:django_llmstream.asgi"
    line: int  # 1-based line of the directive (0 for docstrings)
    kind: str  # "code-block", "literalinclude" or "docstring"
    language: str
    text: str
    options: dict[str, str] = field(default_factory=dict)
    path: Path | None = None  # the included file

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}" if self.line else self.page

    @property
    def caption(self) -> str:
        return self.options.get("caption", "")

    def commands(self) -> list[str]:
        """The shell commands of a ``console`` block (``$`` lines, ``\\`` continuations
        joined) or of an ``sh`` block (every line that is not a comment)."""
        commands: list[str] = []
        pending = ""
        for raw in self.text.splitlines():
            line = raw.rstrip()
            if not pending:
                if self.language == "console":
                    if not line.startswith("$ "):
                        continue  # output
                    line = line[2:]
                elif not line.strip() or line.lstrip().startswith("#"):
                    continue
            line = re.sub(r"\s+#.*$", "", line) if "#" in line and "'" not in line else line
            if line.endswith("\\"):
                pending += line[:-1].strip() + " "
                continue
            commands.append((pending + line.strip()).strip())
            pending = ""
        return commands


def pages() -> list[Path]:
    """Every page Sphinx builds: the ``.rst`` files of ``docs/`` and of its folders
    (``docs/providers/`` …), but not of the build output that conf.py excludes."""
    return sorted(
        path for path in DOCS.rglob("*.rst") if "_build" not in path.relative_to(DOCS).parts
    )


def page_name(page: Path) -> str:
    """A page's path under ``docs/``: ``quickstart.rst``, ``providers/openai.rst``."""
    return page.relative_to(DOCS).as_posix() if page.is_relative_to(DOCS) else page.name


def _include_text(path: Path, options: dict[str, str], where: str) -> str:
    unknown = set(options) - _INCLUDE_OPTIONS
    if unknown:
        raise AssertionError(f"{where}: literalinclude options the tests do not read: {unknown}")
    text = path.read_text(encoding="utf-8")
    if "start-after" in options:
        marker = options["start-after"]
        assert marker in text, f"{where}: {marker!r} is not in {path}"
        text = text.split(marker, 1)[1]
        text = text.split("\n", 1)[1] if "\n" in text else ""
    if "end-before" in options:
        marker = options["end-before"]
        assert marker in text, f"{where}: {marker!r} is not in {path}"
        text = text.split(marker, 1)[0]
        text = text.rsplit("\n", 1)[0] + "\n" if "\n" in text else ""
    if "dedent" in options:
        width = int(options["dedent"])
        text = "\n".join(line[width:] for line in text.splitlines()) + "\n"
    return text


def page_blocks(page: Path) -> list[Block]:
    """The code examples of one page of ``docs/``, in order."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    number = 0
    while number < len(lines):
        match = _DIRECTIVE.match(lines[number])
        if not match:
            number += 1
            continue
        start = number
        indent = len(match["indent"])
        argument = match["arg"].strip()
        options: dict[str, str] = {}
        number += 1
        while number < len(lines):
            stripped = lines[number].strip()
            option = _OPTION.match(stripped)
            if option and _indent(lines[number]) > indent:
                options[option["name"]] = option["value"].strip()
                number += 1
            else:
                break
        body: list[str] = []
        while number < len(lines) and (
            not lines[number].strip() or _indent(lines[number]) > indent
        ):
            body.append(lines[number])
            number += 1
        where = f"{page_name(page)}:{start + 1}"
        if match["name"] == "literalinclude":
            path = (page.parent / argument).resolve()
            assert path.is_file(), f"{where}: {argument} does not exist"
            blocks.append(
                Block(
                    page=page_name(page),
                    line=start + 1,
                    kind="literalinclude",
                    language=options.get("language", ""),
                    text=_include_text(path, options, where),
                    options=options,
                    path=path,
                )
            )
        else:
            text = textwrap.dedent("\n".join(body)).strip("\n") + "\n"
            blocks.append(
                Block(
                    page=page_name(page),
                    line=start + 1,
                    kind="code-block",
                    language=argument or "none",
                    text=text,
                    options=options,
                )
            )
    return blocks


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def all_page_blocks() -> list[Block]:
    return [block for page in pages() for block in page_blocks(page)]


def autodoc_targets() -> list[str]:
    """The modules, classes and functions the pages render with autodoc."""
    names: list[str] = []
    for page in pages():
        names += _AUTODOC.findall(page.read_text(encoding="utf-8"))
    return sorted(set(names))


def _literal_blocks(docstring: str) -> list[str]:
    """The ``::`` literal blocks of a reST docstring."""
    lines = inspect.cleandoc(docstring).splitlines()
    found: list[str] = []
    number = 0
    while number < len(lines):
        if lines[number].rstrip().endswith("::"):
            base = _indent(lines[number])
            number += 1
            body: list[str] = []
            while number < len(lines) and (
                not lines[number].strip() or _indent(lines[number]) > base
            ):
                body.append(lines[number])
                number += 1
            text = textwrap.dedent("\n".join(body)).strip("\n")
            if text:
                found.append(text + "\n")
        else:
            number += 1
    return found


def _import(name: str) -> object:
    try:
        return importlib.import_module(name)
    except ImportError:
        module, _, attribute = name.rpartition(".")
        return getattr(importlib.import_module(module), attribute)


def docstring_blocks() -> list[Block]:
    """The literal blocks of the docstrings autodoc puts in the pages: those of each
    documented object and, for a module, of its public members."""
    seen: set[int] = set()
    blocks: list[Block] = []
    for name in autodoc_targets():
        target = _import(name)
        objects: list[tuple[str, object]] = [(name, target)]
        if inspect.ismodule(target):
            for member in getattr(target, "__all__", []):
                objects.append((f"{name}.{member}", getattr(target, member)))
        for qualified, obj in list(objects):
            if inspect.isclass(obj):
                for attribute, value in vars(obj).items():
                    if inspect.isfunction(value) or isinstance(value, property):
                        objects.append((f"{qualified}.{attribute}", value))
        for qualified, obj in objects:
            doc = getattr(obj, "__doc__", None)
            if not isinstance(doc, str) or id(obj) in seen:
                continue
            seen.add(id(obj))
            for text in _literal_blocks(doc):
                blocks.append(
                    Block(
                        page=f"docstring:{qualified}",
                        line=0,
                        kind="docstring",
                        language="python",
                        text=text,
                    )
                )
    return blocks
