"""`python -m benchmarks` and `python -m reliability`: one command after the other."""

from __future__ import annotations

import pytest

from diana_pipeline.harness.suites import Main, Outcome, run_suite


def test_every_command_runs_in_order_and_the_summary_gives_the_exit_code(
    capsys: pytest.CaptureFixture,
) -> None:
    ran: list[str] = []

    def command(name: str, exit_code: int) -> Main:
        def main(argv: list[str]) -> int:
            ran.append(name)
            return exit_code

        return main

    mains = {"a": command("a", 0), "b": command("b", 1)}
    seen: dict[str, Outcome] = {}

    def summarise(outcomes: dict[str, Outcome]) -> int:
        seen.update(outcomes)
        return 7

    assert run_suite(mains, [], "thing", summarise) == 7
    assert ran == ["a", "b"] and list(seen) == ["a", "b"]
    assert [o.exit_code for o in seen.values()] == [0, 1]
    assert capsys.readouterr().out == "\n== a ==\n\n== b ==\n"


def test_an_unknown_name_runs_nothing(capsys: pytest.CaptureFixture) -> None:
    mains = {"a": lambda argv: pytest.fail("should not run")}
    assert run_suite(mains, ["a", "z"], "thing", lambda outcomes: 0) == 2
    assert capsys.readouterr().out == "unknown thing(s): z; choose from a\n"
