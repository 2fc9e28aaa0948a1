"""The README says what the program does: its commands parse, its quoted messages are the real ones.

Commands: every `sitecontroller ...` in README.md (code blocks, inline code, the command table),
with each `a|b` alternative and with and without each `[optional part]`, must parse.
Messages: every line of a ```text block that starts with `sitecontroller: ` or `my_node.json: `
must match a line the program prints in a scenario below (`…` in the README stands for any text).
"""
import errno
import itertools
import json
import re
import shlex
import shutil
from collections import namedtuple

import pytest

from sitecontroller import cli, preflight
from tests.util import REPO, free_tcp_port

README = REPO / "README.md"
PLACEHOLDERS = {"FILE": "node.json", "N": "3000", "S": "10", "ID": "BMS_STALE"}


def _commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            m = re.match(r"^(?:\.venv/bin/)?sitecontroller (.*?)\s*(?:#.*)?$", line)
            if m:
                found.append(m.group(1))
    found += re.findall(r"`sitecontroller ([^`]+)`", text)
    table = text.split("## Command line", 1)[1].split("\n## ", 1)[0]
    for row in re.findall(r"^\| (.+?) \| .* \|$", table, re.M):
        found += [span for span in re.findall(r"`([^`]+)`", row.replace("\\|", "|")) if span != "command"]
    return found


def _variants(command: str) -> list[list[str]]:
    """`setpoint --w N [--hold S]` -> with and without the optional part; `a|b` -> each choice.
    A command with shell quotes (JSON values) is taken as written, split the way the shell does."""
    if "'" in command:
        return [shlex.split(command)]
    optional = re.findall(r"\[([^\]]+)\]", command)
    out = []
    for keep in itertools.product([False, True], repeat=len(optional)):
        text = command
        for part, k in zip(optional, keep):
            text = text.replace(f"[{part}]", part if k else "", 1)
        choices = [tok.split("|") for tok in text.split()]
        for argv in itertools.product(*choices):
            out.append([PLACEHOLDERS.get(tok, tok) for tok in argv])
    return out


def test_the_readme_quotes_commands():
    assert len(_commands()) >= 10


@pytest.mark.parametrize("command", sorted(set(_commands())))
def test_every_readme_command_parses(command, capsys):
    for argv in _variants(command):
        try:
            cli.build_parser().parse_args(argv)
        except SystemExit as exc:
            assert exc.code == 0 and "--help" in argv, f"README command does not parse: sitecontroller {' '.join(argv)}"
    capsys.readouterr()


# --- messages ----------------------------------------------------------------------------------------


def _quoted_messages() -> list[str]:
    text = README.read_text(encoding="utf-8")
    lines = []
    for block in re.findall(r"```text\n(.*?)```", text, re.S):
        lines += [line for line in block.splitlines() if line.startswith(("sitecontroller: ", "my_node.json: "))]
    return lines


def _pattern(line: str) -> re.Pattern:
    return re.compile(".*".join(re.escape(part) for part in line.split("…")))


Scenario = namedtuple("Scenario", "tmp monkeypatch capsys")


def _example_in(tmp, data_dir="{tmp}/node1"):
    data = json.loads((REPO / "site_parameters" / "sim_node1.json").read_text())
    data["storage"] = {"data_dir": data_dir.format(tmp=tmp)}
    path = tmp / "node.json"
    path.write_text(json.dumps(data))
    return path


def _printed(s: Scenario, argv, replace=()) -> list[str]:
    try:
        cli.main(argv)
    except SystemExit:
        pass
    err = s.capsys.readouterr()
    text = err.err + err.out
    for old, new in replace:
        text = text.replace(old, new)
    return text.splitlines()


def _ports_in_use(s: Scenario):
    s.monkeypatch.setattr(preflight, "port_in_use", lambda host, port: True)
    s.monkeypatch.setattr(preflight, "port_holder", lambda port: "pid 4242 (sitecontroller run --params x.json)")
    return _printed(s, ["run", "--simulate", "--params", str(_example_in(s.tmp))])


def _read_only(s: Scenario):
    def refuse(**kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    s.monkeypatch.setattr(preflight.tempfile, "NamedTemporaryFile", refuse)
    return _printed(s, ["run", "--params", str(_example_in(s.tmp))], [(str(s.tmp), "/srv/bess")])


def _full(s: Scenario):
    s.monkeypatch.setattr(preflight.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    return _printed(s, ["run", "--params", str(_example_in(s.tmp))], [(str(s.tmp), "/srv/bess")])


def _unreachable(s: Scenario):
    port = free_tcp_port()
    s.monkeypatch.setenv("SITECONTROLLER_RUN_DIR", str(s.tmp / "run"))
    s.monkeypatch.setattr(cli, "DEFAULT_ENDPOINT", f"tcp://127.0.0.1:{port}")
    return _printed(s, ["status"], [(f":{port}", ":5550")])


def _typo(s: Scenario):
    data = json.loads((REPO / "site_parameters" / "sim_node1.json").read_text())
    data["safety"]["soc_mni"] = data["safety"].pop("soc_min")
    (s.tmp / "my_node.json").write_text(json.dumps(data))
    s.monkeypatch.chdir(s.tmp)
    return _printed(s, ["check-params", "my_node.json"])


SCENARIOS = [_ports_in_use, _read_only, _full, _unreachable, _typo]


@pytest.fixture
def printed(tmp_path, monkeypatch, capsys) -> list[str]:
    lines = []
    for i, scenario in enumerate(SCENARIOS):
        tmp = tmp_path / str(i)
        tmp.mkdir()
        with monkeypatch.context() as m:
            lines += scenario(Scenario(tmp, m, capsys))
    return lines


def test_the_readme_quotes_messages():
    assert len(_quoted_messages()) >= 5


def test_every_quoted_message_is_what_the_program_prints(printed):
    missing = [line for line in _quoted_messages() if not any(_pattern(line).fullmatch(p) for p in printed)]
    assert not missing, "README messages the program does not print:\n" + "\n".join(missing) + \
        "\n\nthe program printed:\n" + "\n".join(printed)
