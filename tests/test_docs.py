"""Keep the documentation in step with the code.

``docs/settings.rst`` documents every key of ``LLMSTREAM`` as a section whose title is the key
in double backticks (````FLUSH_INTERVAL````), and every system check id; these tests fail when
a setting or a check id is added, renamed or removed on one side only. The last test builds
the whole site with warnings as errors, as CI does.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from django_llmstream.conf import DEFAULTS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SETTINGS_RST = DOCS / "settings.rst"
PACKAGE = ROOT / "django_llmstream"

# A section title that is a setting: the key alone, in double backticks.
_SETTING_TITLE = re.compile(r"^``([A-Z][A-Z0-9_]*)``$")
# A reST section underline (or overline): one punctuation character repeated.
_UNDERLINE = re.compile(r"^([!-/:-@\[-`{-~])\1+$")
_CHECK_ID = re.compile(r"\bllmstream\.[EW]\d{3}\b")


def _setting_sections(text: str) -> dict[str, str]:
    """Setting name -> the body of its section (up to the next section title)."""
    lines = text.splitlines()
    titles: list[tuple[int, str]] = []
    for number, line in enumerate(lines[:-1]):
        match = _SETTING_TITLE.match(line.strip())
        underline = lines[number + 1].rstrip()
        if match and _UNDERLINE.match(underline) and len(underline) >= len(line.rstrip()):
            titles.append((number, match.group(1)))
    all_titles = [
        number
        for number, line in enumerate(lines[:-1])
        if line.strip()
        and _UNDERLINE.match(lines[number + 1].rstrip())
        and len(lines[number + 1].rstrip()) >= len(line.rstrip())
    ]
    sections: dict[str, str] = {}
    for number, name in titles:
        assert name not in sections, f"{name} is documented twice in {SETTINGS_RST.name}"
        following = [n for n in all_titles if n > number]
        end = following[0] if following else len(lines)
        sections[name] = "\n".join(lines[number + 2 : end])
    return sections


@pytest.fixture(scope="module")
def documented() -> dict[str, str]:
    return _setting_sections(SETTINGS_RST.read_text(encoding="utf-8"))


def test_settings_parser_finds_titles_only() -> None:
    text = "\n".join(
        [
            "``ALPHA``",
            "~~~~~~~~~",
            "",
            ":Default: ``1``",
            "",
            "``BETA``",  # a definition-list term, not a title
            "   text",
            "",
            "``GAMMA``",
            "---",  # too short to underline the title
        ]
    )
    assert set(_setting_sections(text)) == {"ALPHA"}


def test_every_setting_is_documented(documented: dict[str, str]) -> None:
    missing = sorted(set(DEFAULTS) - set(documented))
    assert not missing, f"settings without a section in docs/settings.rst: {missing}"


def test_every_documented_setting_exists(documented: dict[str, str]) -> None:
    unknown = sorted(set(documented) - set(DEFAULTS))
    assert not unknown, f"docs/settings.rst documents settings conf.DEFAULTS lacks: {unknown}"


def _literal(value: object) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


def test_documented_defaults_match(documented: dict[str, str]) -> None:
    # Scalar defaults must appear literally on the section's ":Default:" line; dict defaults
    # (PROVIDERS, BROKER, ALLOWED_PARAMS) are described in prose.
    wrong = []
    for name, value in DEFAULTS.items():
        body = documented.get(name)
        if body is None or isinstance(value, dict | list):
            continue
        default_lines = [line for line in body.splitlines() if line.startswith(":Default:")]
        expected = f"``{_literal(value)}``"
        if len(default_lines) != 1 or expected not in default_lines[0]:
            wrong.append(f"{name}: expected ':Default: {expected}'")
    assert not wrong, "docs/settings.rst defaults out of date:\n" + "\n".join(wrong)


def test_every_setting_has_type_and_default(documented: dict[str, str]) -> None:
    incomplete = [
        name
        for name, body in documented.items()
        if not re.search(r"^:Type: \S", body, re.M) or not re.search(r"^:Default: \S", body, re.M)
    ]
    assert not incomplete, f"sections without ':Type:' or ':Default:': {incomplete}"


def test_check_ids_documented() -> None:
    in_code = {
        check_id
        for path in PACKAGE.rglob("*.py")
        for check_id in _CHECK_ID.findall(path.read_text(encoding="utf-8"))
    }
    in_docs = set(_CHECK_ID.findall(SETTINGS_RST.read_text(encoding="utf-8")))
    assert in_code, "no check ids found in the code: has the id format changed?"
    assert not in_code - in_docs, f"undocumented check ids: {sorted(in_code - in_docs)}"
    assert not in_docs - in_code, f"documented ids the code lacks: {sorted(in_docs - in_code)}"


@pytest.mark.skipif(
    importlib.util.find_spec("sphinx") is None or importlib.util.find_spec("furo") is None,
    reason="the docs build needs sphinx and furo (pip install -r docs/requirements.txt)",
)
def test_docs_build(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(tmp_path / "html"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"sphinx-build failed:\n{result.stdout}\n{result.stderr}"
