"""The `amaimedia` command, run in-process against the offline fake over loopback HTTP.

Every in-process run goes through `Cli.run`, which also asserts that the key appears in
neither stdout nor stderr. A few subprocess tests cover what only shows in a real
process: `python -m amaimedia`, the console script, and fake-server's signals and pipes.
"""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import runpy
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import amaimedia
from amaimedia import AmaiClient
from amaimedia._cli import ExitCode, main
from amaimedia.testing import FakeAmaiServer

VENV_BIN = Path(sys.executable).parent
TIMEOUT = 30  # seconds; only a hung child process ever comes near it


@dataclass
class Result:
    code: int
    out: str
    err: str


class Cli:
    """Runs `main([...])` against a served fake, with AMAI_BASE_URL and AMAI_API_KEY set."""

    def __init__(
        self, fake: FakeAmaiServer, key: str, base_url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        self.fake = fake
        self.key = key
        self.base_url = base_url
        self._capsys = capsys

    def run(self, *argv: str) -> Result:
        code = main(argv)
        captured = self._capsys.readouterr()
        assert self.key not in captured.out
        assert self.key not in captured.err
        return Result(code, captured.out, captured.err)


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[Cli]:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=10_000)
    with fake.serve(port=0) as base_url:
        monkeypatch.setenv("AMAI_BASE_URL", base_url)
        monkeypatch.setenv("AMAI_API_KEY", key)
        yield Cli(fake, key, base_url, capsys)


def closed_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_exit_codes_are_a_stable_interface() -> None:
    """Scripts branch on these numbers; changing one is a breaking change."""
    assert {code.name: int(code) for code in ExitCode} == {
        "OK": 0,
        "ERROR": 1,
        "USAGE": 2,
        "AUTH": 3,
        "INSUFFICIENT_CREDITS": 4,
        "FORBIDDEN": 5,
        "RATE_LIMITED": 6,
        "TLS": 8,
        "CONNECTION": 7,
        "PENDING": 9,
        "JOURNAL": 10,
        "INTERRUPTED": 130,
    }


# check and spend


def test_check_prints_the_quote(cli: Cli) -> None:
    result = cli.run("check", "chat", "--units", "1")
    assert result.code == ExitCode.OK
    assert result.out == "chat x1: allowed, costs 5 tokens, balance after 9995\n"
    assert result.err == ""


def test_check_json_is_one_line_with_the_api_field_names(cli: Cli) -> None:
    result = cli.run("check", "dub", "--units", "2.5", "--json")
    assert result.code == ExitCode.OK
    assert result.out.count("\n") == 1
    assert json.loads(result.out) == {
        "ok": True,
        "allowed": True,
        "cost_tokens": 100,
        "balance_after": 9900,
    }
    assert cli.fake.balance(cli.key) == 10_000  # a check never charges


def test_check_not_allowed_exits_like_insufficient_credits(cli: Cli) -> None:
    """So that `amaimedia check dub --units 3 && do-the-work` does no unpaid work."""
    result = cli.run("check", "dub", "--units", "1000")
    assert result.code == ExitCode.INSUFFICIENT_CREDITS
    assert result.out == (
        "dub x1000: NOT allowed (the balance does not cover it), costs 40000 tokens, "
        "balance after 10000\n"
    )
    as_json = cli.run("check", "dub", "--units", "1000", "--json")
    assert as_json.code == ExitCode.INSUFFICIENT_CREDITS
    assert json.loads(as_json.out)["allowed"] is False


def test_spend_prints_the_charge_and_reference(cli: Cli) -> None:
    result = cli.run("spend", "dub", "--units", "2.5", "--reference", "job-42")
    assert result.code == ExitCode.OK
    assert result.out == "dub x2.5: charged 100 tokens, balance after 9900, reference job-42\n"
    assert cli.fake.balance(cli.key) == 9900


def test_spend_json_carries_the_reference(cli: Cli) -> None:
    result = cli.run("spend", "chat", "--json", "--reference", "job-7")
    assert result.code == ExitCode.OK
    assert result.out.count("\n") == 1
    assert json.loads(result.out) == {
        "ok": True,
        "charged": 5,
        "balance_after": 9995,
        "reference": "job-7",
    }


def test_spend_generates_a_reference_that_replays_without_charging_again(cli: Cli) -> None:
    first = cli.run("spend", "chat", "--units", "3", "--json")
    reference = json.loads(first.out)["reference"]
    assert reference.startswith("req_")
    replay = cli.run("spend", "chat", "--units", "3", "--json", "--reference", reference)
    assert json.loads(replay.out) == json.loads(first.out)
    assert [spend.reference for spend in cli.fake.spends] == [reference]
    assert cli.fake.balance(cli.key) == 10_000 - 15


def test_human_spend_shows_the_generated_reference(cli: Cli) -> None:
    result = cli.run("spend", "chat")
    assert cli.fake.spends[0].reference in result.out


# errors: one exit code per class, the stable error string and the request id on stderr


def test_revoked_key_exits_3(cli: Cli) -> None:
    cli.fake.revoke(cli.key)
    result = cli.run("check", "chat")
    assert result.code == ExitCode.AUTH
    assert result.out == ""
    assert "401 auth_required" in result.err
    assert "request_id=" in result.err
    assert "hint: check AMAI_API_KEY" in result.err
    assert len(result.err.splitlines()) == 2


def test_insufficient_credits_exits_4(cli: Cli) -> None:
    result = cli.run("spend", "dub", "--units", "1000", "--reference", "big-job")
    assert result.code == ExitCode.INSUFFICIENT_CREDITS
    assert "402 insufficient_credits" in result.err
    assert "the call costs 40000 tokens, the balance is 10000" in result.err
    assert "reference=big-job" in result.err
    assert "request_id=" in result.err
    assert "hint" not in result.err  # nothing was charged: no replay to suggest
    assert cli.fake.spends == []


def test_suspended_account_exits_5(cli: Cli) -> None:
    cli.fake.suspend(cli.key)
    result = cli.run("check", "chat")
    assert result.code == ExitCode.FORBIDDEN
    assert "403 forbidden" in result.err
    assert "request_id=" in result.err


def test_rate_limited_exits_6(cli: Cli) -> None:
    cli.fake.fail_next("check", status=429, retry_after=1)
    result = cli.run("check", "chat", "--max-retries", "0")
    assert result.code == ExitCode.RATE_LIMITED
    assert "429 rate_limited" in result.err
    assert "wait 1 s" in result.err
    assert "request_id=" in result.err


def test_connection_refused_exits_7(cli: Cli) -> None:
    base_url = f"http://127.0.0.1:{closed_port()}"
    result = cli.run("check", "chat", "--base-url", base_url, "--max-retries", "0")
    assert result.code == ExitCode.CONNECTION
    assert "no usable answer" in result.err
    assert "hint" not in result.err  # a check charges nothing


def test_dropped_spend_exits_7_and_says_how_to_replay(cli: Cli) -> None:
    # The fake charges, then cuts the connection: the outcome is unknown to the caller.
    cli.fake.fail_next("spend", drop_after_commit=True)
    result = cli.run("spend", "chat", "--reference", "job 9", "--max-retries", "0")
    assert result.code == ExitCode.CONNECTION
    assert "reference=job 9" in result.err
    assert "repeat it with --reference 'job 9'" in result.err
    replay = cli.run("spend", "chat", "--reference", "job 9")
    assert replay.code == ExitCode.OK
    assert len(cli.fake.spends) == 1


def test_server_error_exits_1(cli: Cli) -> None:
    cli.fake.fail_next("check", status=503)
    result = cli.run("check", "chat", "--max-retries", "0")
    assert result.code == ExitCode.ERROR
    assert "503 server_error" in result.err
    assert "request_id=" in result.err


def test_server_error_on_spend_says_how_to_replay(cli: Cli) -> None:
    cli.fake.fail_next("spend", status=500)
    result = cli.run("spend", "chat", "--max-retries", "0")
    assert result.code == ExitCode.ERROR
    reference = result.err.split("--reference ")[1].split(",")[0]
    replay = cli.run("spend", "chat", "--reference", reference)
    assert replay.code == ExitCode.OK
    assert cli.fake.spends[0].reference == reference


def test_retries_are_used_before_giving_up(cli: Cli) -> None:
    cli.fake.fail_next("check", status=503, retry_after=0, times=2)
    result = cli.run("check", "chat", "--max-retries", "2", "-v")
    assert result.code == ExitCode.OK
    assert result.err.count("Retrying POST /api/v1/tools/check") == 2


@pytest.mark.parametrize("units", ["0", "-1", "nan", "inf"])
def test_impossible_units_exit_2_without_a_request(cli: Cli, units: str) -> None:
    # Aimed at a closed port: had anything been sent, the exit would be 7.
    nowhere = f"http://127.0.0.1:{closed_port()}"
    result = cli.run("spend", "chat", "--units", units, "--base-url", nowhere)
    assert result.code == ExitCode.USAGE
    assert result.err.startswith("amaimedia: error: units must be a positive")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["check"],
        ["spend", "--units", "1"],
        ["check", "chat", "--units", "one"],
        ["check", "chat", "--max-retries", "1.5"],
        ["check", "chat", "--reference", "job-1"],  # only spend takes a reference
        ["bill", "chat"],
        ["fake-server", "--port", "70000"],
        ["fake-server", "--port", "http"],
        ["fake-server", "--balance", "-5"],
    ],
)
def test_usage_errors_exit_2(cli: Cli, argv: list[str]) -> None:
    result = cli.run(*argv)
    assert result.code == ExitCode.USAGE
    assert "usage: amaimedia" in result.err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--timeout", "0", "timeout must be a positive number"),
        ("--max-retries", "-1", "max_retries must be 0 or more"),
        ("--base-url", "http://example.com", "uses plain http"),
    ],
)
def test_impossible_settings_exit_2(cli: Cli, option: str, value: str, message: str) -> None:
    result = cli.run("check", "chat", option, value)
    assert result.code == ExitCode.USAGE
    assert message in result.err


def test_an_empty_tool_name_exits_2(cli: Cli) -> None:
    result = cli.run("spend", "")
    assert result.code == ExitCode.USAGE
    assert "tool must be a non-empty name" in result.err


# the key


def test_missing_key_exits_3_and_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "chat"]) == ExitCode.AUTH
    err = capsys.readouterr().err
    assert "AMAI_API_KEY" in err
    assert "--api-key-stdin" in err


def test_an_empty_variable_is_a_missing_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AMAI_API_KEY", "")
    assert main(["spend", "chat"]) == ExitCode.AUTH
    assert "set AMAI_API_KEY" in capsys.readouterr().err


def test_a_malformed_key_exits_2_naming_the_variable(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMAI_API_KEY", "amai_live_two words")
    result = cli.run("check", "chat")
    assert result.code == ExitCode.USAGE
    assert "the api_key from AMAI_API_KEY contains whitespace" in result.err
    assert "two words" not in result.err


def test_api_key_stdin_reads_one_stripped_line(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AMAI_API_KEY")
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"  {cli.key}\r\nnot read\n"))
    result = cli.run("check", "chat", "--api-key-stdin", "--json")
    assert result.code == ExitCode.OK
    assert json.loads(result.out)["cost_tokens"] == 5


def test_api_key_stdin_wins_over_the_variable(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    other = cli.fake.create_key(balance=7)
    monkeypatch.setattr(sys, "stdin", io.StringIO(other + "\n"))
    result = cli.run("check", "chat", "--api-key-stdin")
    assert result.out.endswith("balance after 2\n")
    assert other not in result.out + result.err


def test_api_key_stdin_refused_key_hints_at_stdin(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("amai_live_never_issued_0000000000\n"))
    result = cli.run("check", "chat", "--api-key-stdin")
    assert result.code == ExitCode.AUTH
    assert "hint: check the key read from stdin" in result.err
    assert "never_issued" not in result.err


def test_api_key_stdin_with_nothing_to_read_exits_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["check", "chat", "--api-key-stdin"]) == ExitCode.AUTH
    assert "--api-key-stdin read an empty line" in capsys.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_api_key_stdin_at_a_terminal_prompts_without_echo(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts: list[str] = []

    def getpass(prompt: str) -> str:
        prompts.append(prompt)
        return cli.key + "\n"

    monkeypatch.setattr("getpass.getpass", getpass)
    monkeypatch.setattr(sys, "stdin", _Terminal())
    assert cli.run("check", "chat", "--api-key-stdin").code == ExitCode.OK
    assert prompts == ["AMAI_API_KEY: "]


def test_a_key_echoed_by_the_server_is_blanked_out(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key = "amai_live_echoed_by_a_broken_server_0000"
    body = json.dumps({"ok": False, "error": "bad_gateway", "message": f"got Bearer {key}"})
    fake = FakeAmaiServer()
    fake.fail_next("check", status=502, body=body)  # answered before the key is checked
    with fake.serve() as base_url:
        monkeypatch.setenv("AMAI_API_KEY", key)
        code = main(["check", "chat", "--base-url", base_url, "--max-retries", "0"])
    err = capsys.readouterr().err
    assert code == ExitCode.ERROR
    assert "got Bearer [API key]" in err
    assert key not in err


def test_verbose_logs_requests_but_never_the_key(cli: Cli) -> None:
    logger = logging.getLogger("amaimedia")
    handlers, level = list(logger.handlers), logger.level
    result = cli.run("spend", "chat", "-v", "--reference", "job-v")
    assert result.code == ExitCode.OK
    assert 'POST /api/v1/tools/spend {"tool":"chat","units":1,"reference":"job-v"}' in result.err
    assert "-> 200" in result.err
    # The handler belongs to that one run: the next run logs nothing.
    assert (logger.handlers, logger.level) == (handlers, level)
    assert cli.run("check", "chat").err == ""


def test_ctrl_c_during_a_request_exits_130_without_a_traceback(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(AmaiClient, "check", interrupted)
    result = cli.run("check", "chat")
    assert result.code == ExitCode.INTERRUPTED
    assert result.err == "amaimedia: error: interrupted\n"


# --version, --help, python -m amaimedia


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == ExitCode.OK
    assert capsys.readouterr().out == f"amaimedia {amaimedia.__version__}\n"


def test_help_lists_every_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == ExitCode.OK
    out = capsys.readouterr().out
    for code in ExitCode:
        assert f"\n  {code.value:>3}  " in out
    assert "AMAI_API_KEY" in out
    assert "AMAI_BASE_URL" in out


def test_python_dash_m_runs_main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["amaimedia", "--version"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("amaimedia", run_name="__main__")
    assert exit_info.value.code == 0
    assert amaimedia.__version__ in capsys.readouterr().out


def test_check_does_not_load_the_fake() -> None:
    code = (
        "import sys; from amaimedia._cli import main; "
        "assert main(['check', 'chat', '--units', '0']) == 2; "
        "assert 'amaimedia.testing' not in sys.modules, 'loaded'"
    )
    env = {**os.environ, "AMAI_API_KEY": "amai_live_only_for_this_test_0000"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT, env=env
    )
    assert result.returncode == 0, result.stderr


def test_help_in_a_subprocess_lists_the_exit_codes() -> None:
    result = run_module("--help")
    assert result.returncode == 0
    assert "exit codes:" in result.stdout
    assert "  7  no answer: connection refused or reset, or timeout" in result.stdout


def test_the_console_script_is_installed() -> None:
    script = VENV_BIN / ("amaimedia.exe" if os.name == "nt" else "amaimedia")
    result = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"amaimedia {amaimedia.__version__}\n"


def run_module(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "amaimedia", *argv],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
        check=False,
    )


# fake-server, in-process


class _Stdout(io.StringIO):
    """A stdout that calls `on_export` when fake-server prints its `export` line."""

    def __init__(self, on_export: Callable[[], None]) -> None:
        super().__init__()
        self.on_export = on_export

    def write(self, text: str) -> int:
        written = super().write(text)
        if text.startswith("export "):
            self.on_export()
        return written


def parse_export(out: str) -> dict[str, str]:
    line = next(line for line in out.splitlines() if line.startswith("export "))
    return dict(pair.split("=", 1) for pair in line.split()[1:])


def test_fake_server_prints_url_and_key_then_stops_on_sigint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[str] = []

    def use_then_interrupt() -> None:
        env = parse_export(stdout.getvalue())
        with AmaiClient(env["AMAI_API_KEY"], base_url=env["AMAI_BASE_URL"]) as client:
            seen.append(client.check("chat").model_dump_json())
        os.kill(os.getpid(), signal.SIGINT)

    stdout = _Stdout(use_then_interrupt)
    monkeypatch.setattr(sys, "stdout", stdout)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)

    assert main(["fake-server", "--port", "0", "--balance", "50"]) == ExitCode.OK

    out = stdout.getvalue()
    env = parse_export(out)
    assert env["AMAI_BASE_URL"].startswith("http://127.0.0.1:")
    assert not env["AMAI_BASE_URL"].endswith(":0")
    assert env["AMAI_API_KEY"].startswith("amai_live_")
    assert out.splitlines()[0].endswith(env["AMAI_BASE_URL"])
    assert "offline" in out.lower()
    assert "Balance: 50 tokens" in out
    assert json.loads(seen[0]) == {
        "ok": True,
        "allowed": True,
        "cost_tokens": 5,
        "balance_after": 45,
    }
    assert capsys.readouterr().err == "amaimedia: fake server stopped\n"
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers


def test_fake_server_stops_on_sigterm(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        # The signal arrives while fake-server waits, as it would from another process.
        naps.append(seconds)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr("amaimedia._cli._fake_server.sleep", sleep)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert main(["fake-server", "-v"]) == ExitCode.OK
    assert len(naps) == 1
    assert capsys.readouterr().err == "amaimedia: fake server stopped\n"


def test_fake_server_on_a_busy_port_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        assert main(["fake-server", "--port", str(port)]) == ExitCode.ERROR
    captured = capsys.readouterr()
    assert f"cannot listen on 127.0.0.1:{port}" in captured.err
    assert captured.out == ""
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers


# fake-server, as a real process behind a pipe


class FakeServerProcess:
    """`python -m amaimedia fake-server --port 0`, its stdout read line by line."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "amaimedia", "fake-server", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def exported(self) -> dict[str, str]:
        """The variables of the `export` line, read with a timeout rather than hanging.

        Were the lines stuck in the child's buffer, this would time out.
        """
        while True:
            line = self.lines.get(timeout=TIMEOUT)
            if line.startswith("export "):
                return parse_export(line)

    def stop(self, signum: int) -> tuple[int, str]:
        """Send `signum`; return the exit status and stderr."""
        self.proc.send_signal(signum)
        try:
            code = self.proc.wait(timeout=TIMEOUT)
            assert self.proc.stderr is not None
            err = self.proc.stderr.read()
        finally:
            self.close()
        return code, err

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=TIMEOUT)
        self._reader.join(timeout=TIMEOUT)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_fake_server_process_serves_then_exits_0_on_signal(signum: signal.Signals) -> None:
    server = FakeServerProcess()
    try:
        exported = server.exported()
        result = run_module("check", "chat", "--json", env={**os.environ, **exported})
    except BaseException:
        server.close()
        raise
    code, err = server.stop(signum)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["balance_after"] == 9995
    assert exported["AMAI_API_KEY"] not in result.stdout + result.stderr
    assert code == 0, err
    assert "Traceback" not in err
    assert err == "amaimedia: fake server stopped\n"
