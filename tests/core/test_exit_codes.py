"""Exit codes of every command (0 success, 2 user error, 1 internal error) and the one rule for
waiting on the store's writer lock (`--wait SECONDS`)."""
from __future__ import annotations

import functools
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import typer.main

from divergent.cli import _register, app, main
from divergent.errors import StoreLockedError
from divergent.store import Store, lock_wait
from divergent.store import WriterLock

_register()


def _commands():
    """(path, click command) of every registered command, sub-commands included."""
    def walk(cmd, path=()):
        if hasattr(cmd, "commands"):  # a group (typer may vendor its own click: no isinstance)
            for name, sub in cmd.commands.items():
                yield from walk(sub, path + (name,))
        else:
            yield path, cmd
    return dict(walk(typer.main.get_command(app)))


COMMANDS = _commands()

# per command: arguments that make it refuse with a DivergentError (exit 2), and words of that error
USER_ERRORS = {
    ("import",): (["S", "nope.npz", "--split", "test", "--model", "m"], "no such file"),
    ("verify",): (["NOSTORE"], "no store at"),
    ("rm",): (["S", "m9"], "unknown model"),
    ("export",): (["NOSTORE"], "no store at"),
    ("cards",): (["S", "--base", "m9"], "m9"),
    ("calibrate",): (["S", "--fit-on", "train"], "train"),
    ("pairs",): (["S", "--base", "m9"], "m9"),
    ("extract",): (["S", "--data", "fashion-mnist", "--model", "nosuch/model"], "unknown model 'nosuch/model'"),
    ("train",): (["nosuch-zoo", "--out", "Z"], "unknown zoo"),
    ("head",): (["S", "--model", "m0"], "no split 'train'"),
    ("features",): (["NOSTORE", "--a", "a", "--b", "b"], "no store at"),
    ("transfer",): (["NOSTORE", "--models", "a"], "no store at"),
    ("ensemble",): (["S", "--base", "m9"], "m9"),
    ("base-plus-one",): (["S", "--base", "m9"], "m9"),
    ("specialize",): (["S", "--a", "m0", "--b", "m9", "--uncalibrated"], "m9"),
    ("report",): (["NOSUCH"], "no report tables"),
    ("lines",): (["NOSTORE"], "no store at"),
    ("cka",): (["NOSTORE"], "no store at"),
    ("consistency",): (["NOSTORE"], "no store at"),
    ("models", "list"): (["zzzz-no-match", "--no-check"], "no built-in model matches"),
    ("models", "show"): (["nosuch/x"], "unknown model"),
    ("zoo", "list"): (["nosuch-zoo"], "unknown zoo"),
    ("study", "run"): (["nosuch-preset", "--out", "OUT"], "unknown study preset"),
    ("study", "presets"): (["--bogus"], "No such option"),  # takes no input: a usage error is its user error
}
#: commands that write a store: (default of --wait, in seconds)
WRITERS = {("import",): 0, ("rm",): 0, ("calibrate",): 0, ("head",): 0, ("extract",): 600, ("study", "run"): 600}


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    y = np.arange(30) % 3
    st = Store.create(tmp_path / "S")
    with st.writer() as w:
        for split in ("holdout", "test"):
            w.add_split(split, labels=y, class_names=["a", "b", "c"], ids=[f"{split}/{i}" for i in range(30)])
            z = rng.normal(size=(30, 3)).astype(np.float32)
            z[np.arange(30), y] += 1.5
            w.put("m0", split, logits=z)
    return st


def _lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def test_every_command_is_in_the_tables():
    assert set(COMMANDS) == set(USER_ERRORS)
    assert set(WRITERS) <= set(COMMANDS)


@pytest.mark.parametrize("path", sorted(USER_ERRORS), ids=" ".join)
def test_user_error_exits_2_with_problem_and_fix(store, capsys, path):
    args, words = USER_ERRORS[path]
    assert main([*path, *args]) == 2
    lines = _lines(capsys.readouterr().err)
    assert lines[0].startswith("error: ") and words in lines[0], lines
    assert any(line.startswith("  fix: ") for line in lines[1:]), lines


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_usage_error_exits_2(capsys, path):
    assert main([*path, "--no-such-option"]) == 2
    lines = _lines(capsys.readouterr().err)
    assert lines[0] == "error: No such option: --no-such-option"
    assert lines[1].startswith("  fix: see `divergent") and "--help" in lines[1]


def _minimal_args(cmd) -> list[str]:
    """Arguments that parse (every required parameter given a value)."""
    args = []
    for p in cmd.params:
        if p.required:
            args += [p.opts[0], "x"] if p.opts[0].startswith("-") else ["x"]
    return args


def _command_info(path):
    group = app
    for name in path[:-1]:
        group = next(g.typer_instance for g in group.registered_groups if g.name == name)
    infos = [c for c in group.registered_commands if (c.name or c.callback.__name__.replace("_", "-")) == path[-1]]
    return infos[-1]


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_internal_error_exits_1_with_a_short_message_and_a_log(tmp_path, monkeypatch, capsys, path):
    info = _command_info(path)

    @functools.wraps(info.callback)
    def boom(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(info, "callback", boom)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    assert main([*path, *_minimal_args(COMMANDS[path])]) == 1
    err = capsys.readouterr().err
    lines = _lines(err)
    assert lines[0] == "error: internal error (a bug in divergent): RuntimeError: boom"
    assert "Traceback" not in err and len(lines) == 2
    log = next(tmp_path.glob("divergent-crash-*.log")).read_text()
    assert "Traceback" in log and "RuntimeError: boom" in log and str(tmp_path / "divergent-crash-") in lines[1]


def test_exit_code_of_a_command_reaches_the_shell(tmp_path):
    """The console script's status (a subprocess: the point is the process's exit code)."""
    def status(*argv):
        return subprocess.run([sys.executable, "-c", "from divergent.cli import run; run()", *argv],
                              capture_output=True, text=True, cwd=tmp_path, timeout=120)

    r = status("extract", "S", "--data", "fashion-mnist", "--model", "nosuch/model")
    assert r.returncode == 2 and r.stderr.startswith("error: unknown model 'nosuch/model'"), r.stderr
    assert not (tmp_path / "S").exists()
    assert status("study", "presets").returncode == 0


def test_keyboard_interrupt_exits_130(monkeypatch, capsys):
    info = _command_info(("study", "presets"))

    @functools.wraps(info.callback)
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(info, "callback", interrupted)
    assert main(["study", "presets"]) == 130
    assert capsys.readouterr().err.strip() == "error: interrupted"


def test_sigterm_exits_143_like_an_interrupt_and_the_handler_is_restored(monkeypatch, capsys):
    import os
    import signal
    import time

    info = _command_info(("study", "presets"))
    before = signal.getsignal(signal.SIGTERM)

    @functools.wraps(info.callback)
    def terminated():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("SIGTERM did not stop the command")

    monkeypatch.setattr(info, "callback", terminated)
    assert main(["study", "presets"]) == 143
    err = capsys.readouterr().err
    assert err.startswith("error: terminated (SIGTERM)") and "rerun the same command to resume" in err
    assert signal.getsignal(signal.SIGTERM) is before


# ---- the writer lock: one rule, `--wait SECONDS` -----------------------------------------------------
@pytest.mark.parametrize("path", sorted(WRITERS), ids=" ".join)
def test_every_writing_command_has_wait_with_its_default_in_help(capsys, path):
    (opt,) = [p for p in COMMANDS[path].params if p.name == "wait"]
    assert opt.opts == ["--wait"] and opt.default == WRITERS[path]
    assert f"default {WRITERS[path]:g}" in opt.help
    assert main([*path, "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--wait" in out and f"default {WRITERS[path]:g}" in out.replace("│ ", "").replace(" │", "")


def _release_later(lock: WriterLock, after: float) -> threading.Thread:
    t = threading.Thread(target=lambda: (time.sleep(after), lock.release()))
    t.start()
    return t


def _npz(tmp_path):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "m1.npz", labels=np.arange(30) % 3, ids=[f"test/{i}" for i in range(30)],
             logits=rng.normal(size=(30, 3)).astype(np.float32))
    return str(tmp_path / "m1.npz")


@pytest.mark.parametrize("cmd", ["import", "rm", "calibrate"])
def test_interactive_writers_refuse_at_once_or_wait_when_asked(store, tmp_path, capsys, cmd):
    argv = {"import": ["import", "S", _npz(tmp_path), "--split", "test", "--model", "m1"],
            "rm": ["rm", "S", "m0"],
            "calibrate": ["calibrate", "S", "--fit-on", "holdout"]}[cmd]
    lock = WriterLock(store.root)
    lock.acquire()
    try:
        t0 = time.monotonic()
        assert main(argv) == 2
        assert time.monotonic() - t0 < 5
        assert "being written by another process" in capsys.readouterr().err
        t0 = time.monotonic()
        thread = _release_later(lock, 0.5)
        assert main([*argv, "--wait", "60"]) == 0, capsys.readouterr().err
        assert time.monotonic() - t0 >= 0.5
        thread.join()
    finally:
        lock.release()


def test_extract_follows_the_same_rule(store):
    """extract waits by default (a long unattended run) and refuses at once with --wait 0."""
    from divergent.extract.run import _with_writer

    lock = WriterLock(store.root)
    lock.acquire()
    try:
        with lock_wait(0), pytest.raises(StoreLockedError):
            _with_writer(store, lambda w: None)
        thread = _release_later(lock, 0.5)
        t0 = time.monotonic()
        assert _with_writer(store, lambda w: "committed") == "committed"
        assert time.monotonic() - t0 >= 0.5
        thread.join()
    finally:
        lock.release()


def test_wait_gives_up_after_its_time(store):
    lock = WriterLock(store.root)
    lock.acquire()
    try:
        t0 = time.monotonic()
        with pytest.raises(StoreLockedError, match=r"waited 0.3 s"):
            with store.writer(wait=0.3):
                pass
        assert 0.3 <= time.monotonic() - t0 < 5
    finally:
        lock.release()


def test_eof_inside_a_command_is_an_internal_error_not_an_abort(tmp_path, monkeypatch, capsys):
    """click turns an EOFError raised inside a command into `Abort`; it is reported as what it is."""
    info = _command_info(("study", "presets"))

    @functools.wraps(info.callback)
    def eof():
        raise EOFError("No data left in file")

    monkeypatch.setattr(info, "callback", eof)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    assert main(["study", "presets"]) == 1
    assert "EOFError: No data left in file" in capsys.readouterr().err
