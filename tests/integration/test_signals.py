"""`peerllm node` and signals: SIGTERM stops it cleanly, a second one at once, and a
shutdown that hangs is ended by the watchdog (cli/node.py StopOnSignals)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest

from tests.helpers import Daemon, clean_env

FORCED_SIGTERM = 128 + signal.SIGTERM


def test_sigterm_stops_the_daemon_cleanly(daemon: Callable[[str], Daemon]) -> None:
    d = daemon("calm")
    d.start("--no-mdns")
    assert d.stop(signal.SIGTERM) < 5.0
    assert d.proc is not None and d.proc.returncode == 0
    assert any("received SIGTERM, shutting down" in line for line in d.banner)
    assert not any("exiting now" in line for line in d.banner)


def test_a_second_signal_stops_the_daemon_at_once(daemon: Callable[[str], Daemon]) -> None:
    d = daemon("impatient")
    d.start("--no-mdns")
    assert d.proc is not None
    # Frozen, it gets both signals at once when it thaws (a clean shutdown takes a few ms,
    # too short to aim a second signal into; two SIGTERMs would merge into one).
    d.proc.send_signal(signal.SIGSTOP)
    d.proc.send_signal(signal.SIGINT)
    d.proc.send_signal(signal.SIGTERM)
    d.stop(signal.SIGCONT)
    # Which of the two it handles first is the kernel's choice; the other one forces.
    second = next(sig for sig in (signal.SIGINT, signal.SIGTERM) if any(
        f"received {sig.name} while shutting down; exiting now" in line for line in d.banner))
    assert d.proc.returncode == 128 + second


@pytest.mark.parametrize("hang", ["time.sleep(600)", "while True: pass"],
                         ids=["blocking-call", "busy-loop"])
def test_a_shutdown_that_hangs_is_ended_by_the_watchdog(hang: str) -> None:
    # The daemon's signal handling around a body whose cleanup never ends: blocked in a
    # sync call, or spinning on the trio thread so the loop never runs again.
    script = textwrap.dedent(f"""
        import logging, sys, time, trio
        from peerllm.cli.node import StopOnSignals

        async def main() -> None:
            with trio.CancelScope() as scope, StopOnSignals(scope, grace_s=1.0):
                try:
                    print("ready", flush=True)
                    await trio.sleep_forever()
                finally:
                    {hang}

        logging.basicConfig(level=logging.INFO)
        trio.run(main)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=clean_env())
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == FORCED_SIGTERM, out
    assert "still running 1 s after SIGTERM; exiting now" in out
