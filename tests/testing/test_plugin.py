"""The pytest plugin: the `amai_fake` fixture, as a user's test suite meets it.

`pytester` runs small test files in a fresh pytest session, which loads the plugin the
way a user's run does: through the `pytest11` entry point of the installed package.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

import amaimedia.testing.pytest_plugin
from amaimedia.testing import FakeAmaiServer

pytest_plugins = ["pytester"]


def test_the_plugin_is_an_installed_entry_point() -> None:
    [entry] = [e for e in entry_points(group="pytest11") if e.name == "amaimedia"]
    assert entry.value == "amaimedia.testing.pytest_plugin"
    assert entry.load() is amaimedia.testing.pytest_plugin


def test_a_user_suite_uses_the_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_app="""
        from amaimedia.testing import FakeAmaiServer

        def test_spend(amai_fake):
            assert isinstance(amai_fake, FakeAmaiServer)
            key = amai_fake.create_key(balance=100)
            with amai_fake.client(key) as client:
                client.spend("image", reference="job-1")
            assert amai_fake.balance(key) == 80

        def test_each_test_gets_a_fresh_fake(amai_fake):
            assert amai_fake.spends == []
            assert amai_fake.requests == []
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_a_wrong_expectation_fails(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_app="""
        def test_spend(amai_fake):
            key = amai_fake.create_key(balance=100)
            with amai_fake.client(key) as client:
                client.spend("image", reference="job-1")
            assert amai_fake.balance(key) == 100
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*assert 80 == 100*"])


def test_the_fixture_is_listed(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--fixtures", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["amai_fake*", "*fresh*FakeAmaiServer*"])


def test_the_plugin_can_be_turned_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_app="def test_spend(amai_fake):\n    pass\n")
    result = pytester.runpytest("-p", "no:amaimedia", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'amai_fake' not found*"])


def test_the_fixture_in_this_suite(amai_fake: FakeAmaiServer) -> None:
    key = amai_fake.create_key(balance=7)
    assert amai_fake.balance(key) == 7
