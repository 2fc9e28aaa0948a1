"""The command line at its edges: help everywhere, odd numbers, broken pipes, finding the node."""
import argparse
import json
import subprocess
import sys

import pytest

from sitecontroller import cli, running
from sitecontroller.params import DEFAULT_ENDPOINT
from tests.util import REPO, free_tcp_port


def _parsers(parser: argparse.ArgumentParser, name="sitecontroller"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_command_option_and_argument_has_help():
    missing = []
    for name, parser in _parsers(cli.build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                listed = {a.dest for a in action._choices_actions if a.help}
                missing += [f"{name} {c}" for c in action.choices if c not in listed]
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, f"no help text: {missing}"


@pytest.mark.parametrize("argv, watts", [(["--w", "-3000"], -3000.0), (["--w=-3000"], -3000.0),
                                         (["--w", "2500.5"], 2500.5)])
def test_negative_and_fractional_watts_parse(argv, watts):
    args = cli.build_parser().parse_args(["setpoint", *argv])
    assert args.w == watts


@pytest.mark.parametrize("hold", ["0", "0.5", "-1", "nan", "1e9", "soon"])
def test_hold_below_one_second_or_absurd_is_refused_in_one_line(hold, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["setpoint", "--w", "100", "--hold", hold])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --hold: found '{hold}'; allowed: seconds from 1 to 86400" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("watts", ["nan", "inf", "3kW"])
def test_watts_must_be_a_finite_number(watts, capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["setpoint", "--w", watts])
    assert "argument --w: found" in capsys.readouterr().err


def test_hold_of_one_second_is_accepted():
    assert cli.build_parser().parse_args(["setpoint", "--w", "1", "--hold", "1"]).hold == 1.0


def test_a_broken_pipe_is_not_a_traceback():
    """`sitecontroller status | head -1`: the reader goes away early; no traceback, no noise.
    The command here prints 1 MB so that the write after the reader left really fails (EPIPE)."""
    program = ("import sys; from sitecontroller import cli; "
               "cli.cmd_status = lambda args: [print('x' * 1000) for _ in range(1000)] and 0; "
               "sys.exit(cli.main(['status']))")
    script = f"{sys.executable} -c \"{program}\" | head -c 10 >/dev/null; echo ${{PIPESTATUS[0]}}"
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=REPO, timeout=30)
    assert r.stderr == "", r.stderr
    assert r.stdout.strip() == "1"


def test_main_turns_a_broken_pipe_into_exit_1(monkeypatch):
    def boom(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "_silence_stdout", lambda: None)
    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["status"].set_defaults(func=boom)
    assert cli.main(["status"]) == 1


# --- which node the talking commands reach ----------------------------------------------------


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SITECONTROLLER_RUN_DIR", str(tmp_path / "run"))
    return tmp_path / "run"


def _endpoint(*argv):
    return cli._endpoint(cli.build_parser().parse_args(["status", *argv]))


def test_no_node_running_means_the_default_endpoint(run_dir):
    assert _endpoint() == DEFAULT_ENDPOINT


def test_the_only_running_node_is_found_with_no_flags(run_dir):
    with running.announce("node2", "tcp://127.0.0.1:5551", "site_parameters/sim_node2_pylontech_lux_p1.json"):
        assert _endpoint() == "tcp://127.0.0.1:5551"
    assert _endpoint() == DEFAULT_ENDPOINT  # the entry went with the node


def test_the_default_node_wins_when_it_runs(run_dir):
    with running.announce("node1", DEFAULT_ENDPOINT, "a.json"), \
            running.announce("node2", "tcp://127.0.0.1:5551", "b.json"):
        assert _endpoint() == DEFAULT_ENDPOINT


def test_flags_win_over_running_nodes(run_dir):
    with running.announce("node2", "tcp://127.0.0.1:5551", "b.json"):
        assert _endpoint("--endpoint", "tcp://127.0.0.1:9") == "tcp://127.0.0.1:9"


def test_a_node_killed_without_cleanup_is_forgotten(run_dir):
    run_dir.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run_dir / f"{dead.pid}.json").write_text(json.dumps({"pid": dead.pid, "endpoint": "tcp://127.0.0.1:5599"}))
    assert running.running_nodes() == []
    assert not list(run_dir.glob("*.json"))


def test_several_nodes_and_none_default_says_how_to_choose(run_dir, monkeypatch, capsys):
    entries = [{"pid": 1, "node_id": "node2", "endpoint": "tcp://127.0.0.1:5551", "params": "/x/n2.json"},
               {"pid": 1, "node_id": "node3", "endpoint": "tcp://127.0.0.1:5552", "params": "/x/n3.json"}]
    monkeypatch.setattr(running, "running_nodes", lambda: entries)
    with pytest.raises(SystemExit) as exc:
        _endpoint()
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "node2 (--endpoint tcp://127.0.0.1:5551" in err and "node3" in err
    assert "choose one with --params FILE or --endpoint" in err


def test_an_unreachable_default_node_says_how_to_reach_another(run_dir, monkeypatch):
    port = free_tcp_port()
    monkeypatch.setattr(cli, "DEFAULT_ENDPOINT", f"tcp://127.0.0.1:{port}")
    r = subprocess.run([sys.executable, "-c",
                        "import sys; from sitecontroller import cli; "
                        f"cli.DEFAULT_ENDPOINT = 'tcp://127.0.0.1:{port}'; sys.exit(cli.main(['status']))"],
                       capture_output=True, text=True, cwd=REPO, timeout=20,
                       env={**__import__("os").environ, "SITECONTROLLER_RUN_DIR": str(run_dir)})
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "did not answer" in r.stderr and "--params FILE or --endpoint" in r.stderr


def test_the_help_examples_parse():
    examples = [line.split("#")[0].split(">")[0].split()[1:] for line in cli.EPILOG.splitlines()
                if line.strip().startswith("sitecontroller ")]
    assert len(examples) >= 5
    for argv in examples:
        cli.build_parser().parse_args(argv)
