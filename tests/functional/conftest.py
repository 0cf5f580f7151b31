from __future__ import annotations

import pytest

from portal import create_app


@pytest.fixture
def app(db_url, tmp_path):
    app = create_app({"DATABASE_URL": db_url, "TESTING": True, "PORTAL_CLI": True, "SECRET_KEY": "test-secret"})
    app.instance_path = str(tmp_path / "instance")
    yield app
    app.extensions["portal.db"].engine.dispose()


@pytest.fixture
def cli(app):
    runner = app.test_cli_runner()

    def invoke(*args: str):
        return runner.invoke(args=list(args), catch_exceptions=False)

    return invoke


@pytest.fixture
def ready(cli):
    """Schema migrated and built-in programs loaded, as `portal init` does."""
    result = cli("init")
    assert result.exit_code == 0, result.output
    return cli


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)
