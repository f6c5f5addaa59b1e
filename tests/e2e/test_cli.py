"""Top-level CLI conventions: --help, --version, COMMAND --help, usage errors exit 2."""
import subprocess

import pytest


def sh(barista_bin, *args):
    return subprocess.run([barista_bin, *args], capture_output=True, text=True, timeout=60)


def test_version(barista_bin):
    r = sh(barista_bin, "--version")
    assert r.returncode == 0 and r.stdout.startswith("barista ")


def test_help_lists_working_commands(barista_bin):
    r = sh(barista_bin, "--help")
    assert r.returncode == 0
    for cmd in ("inspect", "run", "serve"):
        assert f"  {cmd} " in r.stdout


@pytest.mark.parametrize("cmd", ["inspect", "run", "serve"])
def test_command_help(barista_bin, cmd):
    r = sh(barista_bin, cmd, "--help")
    assert r.returncode == 0
    assert r.stdout.startswith(f"usage: barista {cmd}")


@pytest.mark.parametrize("args", [[], ["bogus"], ["inspect"], ["inspect", "--bogus", "x"],
                                  ["run", "--bogus"], ["serve", "--bogus"]])
def test_usage_errors_exit_2(barista_bin, args):
    r = sh(barista_bin, *args)
    assert r.returncode == 2
    assert "usage" in r.stderr.lower() or "unknown" in r.stderr.lower() or "missing" in r.stderr.lower()
