"""require_tool: skip locally, fail when LIFEBOAT_REQUIRE_ALL is set."""

from __future__ import annotations

import pytest

from engine.tests.tools import require_tool


def test_require_tool_finds_installed_tools() -> None:
    assert require_tool("sh").endswith("sh")


def test_missing_tool_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIFEBOAT_REQUIRE_ALL", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        require_tool("no-such-tool-lifeboat")


def test_missing_tool_fails_when_everything_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFEBOAT_REQUIRE_ALL", "1")
    with pytest.raises(pytest.fail.Exception, match="LIFEBOAT_REQUIRE_ALL"):
        require_tool("no-such-tool-lifeboat")
