"""The pytest plugin costs a run that does not use it nothing: the SDK loads with the fixture.

pytest loads the plugin in every run of every project that installs the SDK, so loading it
must not load the clients, httpx or pydantic (≈240 modules). Each check runs in a fresh
interpreter, since this one has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest_plugins = ["pytester"]

# What importing the plugin may load of the SDK: the packages on its import path, and the
# version string.
ALLOWED = {
    "amaimedia",
    "amaimedia._version",
    "amaimedia.testing",
    "amaimedia.testing.pytest_plugin",
}
HEAVY = ("amaimedia", "httpx", "pydantic")

# Prints, as a JSON list, the modules of the SDK, httpx and pydantic loaded so far.
REPORT = (
    "import json, sys\n"
    f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({HEAVY!r}))))"
)


def loaded_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\n{REPORT}"], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_importing_the_plugin_loads_no_client_httpx_or_pydantic() -> None:
    loaded = loaded_after("import amaimedia.testing.pytest_plugin")
    assert "amaimedia.testing.pytest_plugin" in loaded
    assert loaded - ALLOWED == set()


def test_importing_the_testing_package_loads_no_client_httpx_or_pydantic() -> None:
    assert loaded_after("import amaimedia.testing") - ALLOWED == set()


def test_the_fake_loads_the_sdk_when_it_is_used() -> None:
    loaded = loaded_after("from amaimedia.testing import FakeAmaiServer")
    # pydantic's models wait for the first call (tests/docs/test_import.py).
    assert {"amaimedia._client", "amaimedia._async_client", "httpx"} <= loaded


def test_the_sdk_loads_what_its_first_name_needs() -> None:
    # A name loads its own module, and the errors, models and clients name the public path
    # as soon as they are loaded, whoever loads them: tracebacks and reprs show it.
    code = (
        "import amaimedia\n"
        "amaimedia.AmaiClient\n"
        "assert amaimedia.AmaiClient.__module__ == 'amaimedia'\n"
        "from amaimedia._exceptions import APIError\n"
        "assert APIError.__module__ == 'amaimedia', APIError.__module__"
    )
    loaded = loaded_after(code)
    assert "amaimedia._client" in loaded
    assert "amaimedia._async_client" not in loaded


def run_alone(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.RunResult:
    """Runs pytester's files in a fresh pytest process that loads only the SDK's plugin.

    Other installed plugins (respx's imports httpx) stay off, so that what the run loads
    is what the SDK's plugin loads, through its entry point, as in a user's project.
    """
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    return pytester.runpytest_subprocess("-p", "amaimedia", "-p", "no:cacheprovider")


def test_a_run_that_does_not_use_the_fixture_loads_no_sdk(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        test_app=f"""
        import json, sys

        def test_plain_arithmetic():
            assert "amaimedia.testing.pytest_plugin" in sys.modules  # the plugin is loaded
            loaded = set(m for m in sys.modules if m.startswith({HEAVY!r}))
            assert loaded - {ALLOWED!r} == set()
        """
    )
    result = run_alone(pytester, monkeypatch)
    result.assert_outcomes(passed=1)


def test_a_run_that_uses_the_fixture_gets_a_working_fake(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        test_app="""
        import sys

        def test_before_the_fixture():
            assert "amaimedia._client" not in sys.modules

        def test_spend(amai_fake):
            key = amai_fake.create_key(balance=100)
            with amai_fake.client(key) as client:
                client.spend("image", reference="job-1")
            assert amai_fake.balance(key) == 80
            assert type(client).__module__ == "amaimedia"
        """
    )
    result = run_alone(pytester, monkeypatch)
    result.assert_outcomes(passed=2)
