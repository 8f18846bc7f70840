"""`amaimedia -v` with `AMAI_LOG` set prints each log line once, in a real process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from amaimedia.testing import FakeAmaiServer


@pytest.mark.slow
@pytest.mark.parametrize("level", ["debug", "info"])
def test_verbose_and_amai_log_print_each_line_once(level: str) -> None:
    fake = FakeAmaiServer()
    key = fake.create_key()
    with fake.serve() as base_url:
        env = {**os.environ, "AMAI_API_KEY": key, "AMAI_BASE_URL": base_url, "AMAI_LOG": level}
        result = subprocess.run(
            [sys.executable, "-m", "amaimedia", "check", "chat", "-v"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    # -v asks for DEBUG whatever AMAI_LOG says, and one handler writes each line.
    assert result.stderr.count('POST /api/v1/tools/check {"tool":"chat","units":1}') == 1
    assert result.stderr.count("/api/v1/tools/check -> 200") == 1
    assert key not in result.stderr + result.stdout


def test_verbose_keeps_a_handler_amai_log_installed_before(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from amaimedia import _logging
    from amaimedia._cli import main

    fake = FakeAmaiServer()
    key = fake.create_key()
    logger = _logging.logger
    level = logger.level
    installed = _logging.install_stderr_handler()  # as AMAI_LOG did, earlier in the process
    assert installed is not None
    try:
        with fake.serve() as base_url:
            monkeypatch.setenv("AMAI_API_KEY", key)
            monkeypatch.setenv("AMAI_BASE_URL", base_url)
            assert main(["check", "chat", "-v"]) == 0
        # The run used that handler, and left it in place for whoever installed it.
        assert installed in logger.handlers
        _logging.remove_stderr_handler(_logging.install_stderr_handler() or installed)
        assert installed not in logger.handlers
        _logging.remove_stderr_handler(installed)  # not installed any more: nothing to do
    finally:
        logger.setLevel(level)
        if installed in logger.handlers:
            _logging.remove_stderr_handler(installed)
