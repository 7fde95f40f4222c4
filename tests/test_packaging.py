"""What the distributions carry: the licence, an sdist whose tests run, the dashboard's
templates and stylesheet in the wheel, and a clear error when the Redis client is missing."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

from flask_jwt_shield.errors import ConfigurationError
from flask_jwt_shield.stores import store_from_uri

from .conftest import AppFactory

ROOT = Path(__file__).resolve().parent.parent


def test_the_licence_is_the_one_the_metadata_names() -> None:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert setup["metadata"]["license"] == "BSD-3-Clause"
    assert setup["metadata"]["license_files"].split() == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("BSD 3-Clause License")
    assert "Copyright (c) 2026, Flask-JWT-Shield contributors" in text


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """setuptools' file list for the sdist (egg_info's SOURCES.txt) and build_py's output,
    computed from this tree (a checkout or an unpacked sdist) as ``python -m build`` does."""
    pytest.importorskip("setuptools")
    out = tmp_path_factory.mktemp("build")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import setuptools; setuptools.setup()",
            "-q",
            "egg_info",
            "--egg-base",
            str(out),
            "build_py",
            "--build-lib",
            str(out / "lib"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    [sources] = out.glob("*.egg-info/SOURCES.txt")
    return sources, out / "lib", done.stdout + done.stderr


def test_the_sdist_carries_what_the_tests_read(built: tuple[Path, Path, str]) -> None:
    listed = set(built[0].read_text().split())
    tests = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").glob("*.py")}
    assert "tests/conftest.py" in tests and tests <= listed
    needed = {
        "LICENSE",
        "README.md",  # the README's sample runs in test_readme.py
        "example_app/app.py",
        "example_app/demo-geoip.mmdb",
        "example_app/templates/index.html",
        "scripts/make_demo_geoip.py",  # test_geo: the demo database is reproducible
        "docs/recommended_settings.py",
        "docs/production.rst",  # test_stories
        "docs/configuration.rst",  # test_config: every key documented
        "docs/quickstart.rst",  # test_readme: the quickstart runs
    }
    assert needed <= listed, sorted(needed - listed)
    assert not [p for p in listed if "/instance/" in p or p.endswith((".pyc", ".db"))]


def test_the_wheel_carries_the_dashboard_and_nothing_is_ignored(built: tuple[Path, Path, str]) -> None:
    _, lib, output = built
    assert "would be ignored" not in output
    dashboard = lib / "flask_jwt_shield" / "dashboard"
    assert (dashboard / "static" / "dashboard.css").is_file()
    assert (dashboard / "templates" / "jwt_shield_dashboard" / "base.html").is_file()
    assert (lib / "flask_jwt_shield" / "py.typed").is_file()
    assert not (lib / "tests").exists() and not (lib / "example_app").exists()


@pytest.mark.parametrize("uri", ["redis://127.0.0.1:6379/0", "redis+cluster://127.0.0.1:7000", "unix:///tmp/r.sock"])
def test_a_redis_store_without_the_client_says_which_extra(monkeypatch: pytest.MonkeyPatch, uri: str) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # as if redis-py were not installed
    with pytest.raises(ConfigurationError, match=r"pip install 'Flask-JWT-Shield\[redis\]'"):
        store_from_uri(uri)


def test_the_missing_client_stops_the_app_at_start_up(monkeypatch: pytest.MonkeyPatch, make_app: AppFactory) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    app, shield = make_app({"JWT_SHIELD_STORE_URI": "redis://127.0.0.1:6379/0"}, defer_init=True)
    with pytest.raises(ConfigurationError, match=r"Flask-JWT-Shield\[redis\]"):
        shield.init_app(app)
