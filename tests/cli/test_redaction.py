"""The `amaimedia` command never prints the API key: not in `-v` log lines, not in usage errors.

The SDK never puts the key in a message, but a server (or a proxy) may echo it back, and
`-v` prints the SDK's log lines, which quote what the server said. A key typed as an
argument (`--api-key KEY`, which is not an option) would be echoed by argparse's usage
error. Each run is in-process against the offline fake over loopback HTTP.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from amaimedia import AmaiClient, SpendFailedError
from amaimedia._cli import ExitCode, main
from amaimedia._cli._console import Console
from amaimedia._logging import logger
from amaimedia.testing import FakeAmaiServer

REDACTED = "[API key]"


@dataclass
class Run:
    code: int
    out: str
    err: str


@dataclass
class Served:
    fake: FakeAmaiServer
    key: str
    base_url: str
    capsys: pytest.CaptureFixture[str]

    def run(self, *argv: str) -> Run:
        code = main(list(argv))
        captured = self.capsys.readouterr()
        return Run(code, captured.out, captured.err)

    def echo_next(self, endpoint: str, *, status: int = 503) -> None:
        """The next answer of `endpoint` quotes the key, as a careless server might."""
        self.fake.fail_next(
            endpoint,
            status=status,
            body={"error": "server_error", "message": f"no such key: {self.key}"},
        )

    def assert_clean(self, run: Run) -> None:
        assert self.key not in run.out
        assert self.key not in run.err
        # Not even in part: a line cut or wrapped around the key.
        assert self.key[10:30] not in run.out + run.err


@pytest.fixture
def served(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Served]:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=10_000)
    level = logger.level
    with fake.serve() as base_url:
        monkeypatch.setenv("AMAI_BASE_URL", base_url)
        monkeypatch.setenv("AMAI_API_KEY", key)
        yield Served(fake, key, base_url, capsys)
    logger.setLevel(level)


# --- -v: the SDK's log lines -------------------------------------------------------------


@pytest.mark.parametrize("command", ["check", "spend"])
def test_verbose_lines_blank_a_key_the_server_echoes(served: Served, command: str) -> None:
    endpoint = "check" if command == "check" else "spend"
    served.echo_next(endpoint)
    run = served.run(command, "chat", "-v")
    assert run.code == ExitCode.OK, run.err
    # The retry's log line quotes the 503's message, with the key blanked out.
    assert f"no such key: {REDACTED}" in run.err
    served.assert_clean(run)


def test_verbose_lines_blank_it_with_the_key_from_stdin(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.delenv("AMAI_API_KEY")
    monkeypatch.setattr("sys.stdin", io.StringIO(served.key + "\n"))
    served.echo_next("check")
    run = served.run("check", "chat", "-v", "--api-key-stdin")
    assert run.code == ExitCode.OK, run.err
    assert f"no such key: {REDACTED}" in run.err
    served.assert_clean(run)


def test_verbose_replay_blanks_it_too(served: Served, tmp_path: Path) -> None:
    journal = tmp_path / "spends.sqlite3"
    served.fake.fail_next("spend", status=503)
    with (
        AmaiClient(
            served.key, base_url=served.base_url, max_retries=0, spend_journal=journal
        ) as client,
        pytest.raises(SpendFailedError),
        client.metered("chat", reference="job-1"),
    ):
        pass
    served.echo_next("spend")
    run = served.run("replay", "--journal", str(journal), "-v")
    assert run.code == ExitCode.OK, run.err
    assert f"no such key: {REDACTED}" in run.err
    served.assert_clean(run)


def test_a_failure_the_command_reports_blanks_it(served: Served) -> None:
    served.echo_next("check", status=401)
    run = served.run("check", "chat", "-v")
    assert run.code == ExitCode.AUTH
    assert f"no such key: {REDACTED}" in run.err
    served.assert_clean(run)


# --- what a record can carry -----------------------------------------------------------


def test_a_record_with_args_an_exception_and_a_stack_is_blanked_whole(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    """A record's message arguments, its exception and its stack are written by the
    handler, after the logger's own filters: each is blanked where it is written."""
    from amaimedia._cli._console import debug_logging

    console = Console(served.key)
    try:
        raise RuntimeError(f"the server said {served.key}")
    except RuntimeError as exc:
        failure = exc
    with debug_logging(True), console.key_kept_out_of_logs():
        logger.warning("echoed %s and %r", served.key, {"key": served.key})
        logger.error("it failed", exc_info=failure)
        logger.error("here, with %s", served.key, stack_info=True)
        # A logger below the SDK's: its records reach the SDK's handler, not its filters.
        logging.getLogger("amaimedia.below").warning("below: %s", served.key)
    err = capsys.readouterr().err
    assert f"echoed {REDACTED} and {{'key': '{REDACTED}'}}" in err
    assert f"RuntimeError: the server said {REDACTED}" in err
    assert f"below: {REDACTED}" in err
    assert "Stack (most recent call last)" in err
    assert served.key not in err


def test_a_record_that_cannot_be_formatted_does_not_show_its_args(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    """logging reports a broken record with its message and args: not with the key."""
    from amaimedia._cli._console import debug_logging

    console = Console(served.key)
    with debug_logging(True), console.key_kept_out_of_logs():
        logger.warning("two %s %s", served.key)  # one argument short
    err = capsys.readouterr().err
    assert served.key not in err
    assert REDACTED in err


# --- argparse's usage errors ------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "chat", "--api-key", "{key}"],
        ["check", "chat", "--api-key={key}"],
        ["spend", "chat", "--units", "{key}"],
        ["check", "chat", "--timeout", "{key}"],
        ["{key}", "check", "chat"],
        ["check", "chat", "extra", "{key}"],
        ["replay", "--journal", "j.sqlite3", "--max-age", "{key}"],
    ],
    ids=["--api-key", "--api-key=", "--units", "--timeout", "command", "extra", "--max-age"],
)
def test_a_key_on_the_command_line_is_not_echoed(served: Served, argv: list[str]) -> None:
    run = served.run(*(token.format(key=served.key) for token in argv))
    assert run.code == ExitCode.USAGE
    assert REDACTED in run.err
    # And the error says where a key goes instead.
    assert "set AMAI_API_KEY, or pipe it to --api-key-stdin" in run.err
    served.assert_clean(run)


def test_a_key_of_another_form_is_not_echoed_when_it_is_the_environments(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = "sk-THE-ENVIRONMENTS-KEY-0123456789"
    monkeypatch.setenv("AMAI_API_KEY", other)
    run = served.run("check", "chat", "--api-key", other)
    assert run.code == ExitCode.USAGE
    assert other not in run.err
    assert REDACTED in run.err


def test_a_key_of_another_account_is_not_echoed_either(served: Served) -> None:
    other = "amai_live_SOMEONE_ELSES_KEY_0123456789"
    run = served.run("check", "chat", "--api-key", other)
    assert run.code == ExitCode.USAGE
    assert other not in run.err
    assert "SOMEONE_ELSES" not in run.err


def test_a_usage_error_without_a_key_is_unchanged(served: Served) -> None:
    run = served.run("spend", "chat", "--units", "lots")
    assert run.code == ExitCode.USAGE
    assert "argument --units: not a number: 'lots'" in run.err
    assert REDACTED not in run.err


@pytest.mark.parametrize("prefix", ["--api-key", "--api-key-std", "--ref"])
def test_an_option_is_never_a_prefix_of_another(served: Served, prefix: str) -> None:
    # argparse's abbreviations made `--api-key` mean `--api-key-stdin`: the command then
    # waited for a key on stdin instead of saying that the option does not exist.
    run = served.run("spend", "chat", prefix)
    assert run.code == ExitCode.USAGE
    assert f"unrecognized arguments: {prefix}" in run.err
    assert served.fake.spends == []
