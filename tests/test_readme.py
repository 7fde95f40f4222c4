"""The README's sample and the quickstart's app run as written (with the secret from the
environment, as they say), and the README's commands exist."""

from __future__ import annotations

import re
import textwrap
import typing as t
from pathlib import Path

import pytest

from .conftest import SECRET
from .conftest import bearer

ROOT = Path(__file__).resolve().parent.parent


def readme_python() -> str:
    [block] = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), re.MULTILINE | re.DOTALL)
    return str(block)


def quickstart_python() -> str:
    text = (ROOT / "docs" / "quickstart.rst").read_text()
    start = text.index(".. code-block:: python\n\n", text.index("Save this as ``app.py``"))
    lines = []
    for line in text[start:].splitlines()[2:]:
        if line and not line.startswith("   "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines))


def run_sample(source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> t.Any:
    """Execute ``source`` as the module ``sample_app`` in ``tmp_path`` (its instance folder
    and SQLite store land there), with the secret in the environment; its Flask app."""
    monkeypatch.chdir(tmp_path)  # Flask places an unimported module's instance folder in the cwd
    monkeypatch.setenv("JWT_SHIELD_SECRET_KEY", SECRET)
    namespace: dict[str, t.Any] = {"__name__": "sample_app"}
    exec(compile(source, "sample_app.py", "exec"), namespace)
    app = namespace["app"]
    assert Path(app.instance_path) == tmp_path / "instance"
    app.testing = True
    return app


@pytest.mark.parametrize("sample", [readme_python, quickstart_python], ids=["README", "quickstart"])
def test_the_sample_runs_as_written(
    sample: t.Callable[[], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = sample()
    assert "token_urlsafe" not in source.replace("print(secrets.token_urlsafe(48))", "")  # not made at import
    app = run_sample(source, tmp_path, monkeypatch)
    client = app.test_client()
    path = "/api/me" if sample is readme_python else "/me"
    assert client.get(path).status_code == 401
    assert client.post("/login", json={"username": "alice", "password": "nope"}).status_code == 400
    assert client.post("/login", json=[None, None]).status_code == 400
    pair = client.post("/login", json={"username": "alice", "password": "wonderland"})
    assert pair.status_code == 200, pair.get_data(as_text=True)
    me = client.get(path, headers=bearer(pair.json["access_token"]))
    assert me.status_code == 200 and "alice" in me.json.values()
    refreshed = client.post(
        "/oauth/token", data={"grant_type": "refresh_token", "refresh_token": pair.json["refresh_token"]}
    )
    assert refreshed.status_code == 200
    assert (tmp_path / "instance" / "shield.db").exists()


def test_the_sample_needs_the_secret_in_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JWT_SHIELD_SECRET_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KeyError, match="JWT_SHIELD_SECRET_KEY"):
        exec(compile(readme_python(), "sample_app.py", "exec"), {"__name__": "sample_app"})


def test_the_readme_make_targets_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    targets = set(re.findall(r"^([a-z]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    used = set(re.findall(r"`(?:PORT=\d+ )?make ([a-z]+)`|^make ([a-z]+)", readme, re.MULTILINE))
    named = {name for pair in used for name in pair if name}
    assert {"run", "demo", "test"} <= named
    assert named <= targets, sorted(named - targets)
    # A bare `python -m example_app...` in a fresh shell lacks the venv's packages.
    assert not re.search(r"(?<![/\w])python -m example_app", readme)
