"""The README is for users: short, with the two commands CI runs, and no project history."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_is_short_and_holds_the_commands_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 300
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    test_command = next(line for line in ci.splitlines() if "pytest" in line and not line.startswith("#"))
    assert test_command.strip() in readme
    assert "pip install -e . && mmgenre predict" in readme


def test_user_documentation_speaks_of_no_issues_or_work_in_progress():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert not re.search(r"\bissue\b|in progress", readme, re.IGNORECASE)


def test_links_in_the_readme_lead_to_files_that_exist():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = {t.split("#")[0] for t in re.findall(r"\]\(([^)#][^)]*)\)", readme) if not t.startswith("http")}
    assert targets and all((ROOT / t).exists() for t in targets), targets


def test_links_in_the_developer_docs_lead_to_files_that_exist():
    for doc in (ROOT / "docs").glob("*.md"):
        text = doc.read_text(encoding="utf-8")
        targets = {t.split("#")[0] for t in re.findall(r"\]\(([^)#][^)]*)\)", text) if not t.startswith("http")}
        assert all((doc.parent / t).exists() for t in targets), (doc.name, targets)
