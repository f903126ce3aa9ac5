"""How a ``greenredis`` process stops: Ctrl-C, SIGTERM, and the death of its parent.

SIGINT and SIGTERM are watched by gevent's loop, so they are seen at once whatever
the command waits for, and turned into an exception in the main greenlet, whose
``finally`` blocks clean up: ``Interrupted`` (Ctrl-C, exit 130) or ``Terminated``
(SIGTERM, what Heroku and honcho send: exit 0). A second signal while cleaning up
ends the process at once. The hub prints nothing for either.

A child started by ``greenredis dashboard`` gets ``$GREENREDIS_PARENT_PID`` and dies
with that parent, even a SIGKILLed one: on Linux through ``PR_SET_PDEATHSIG``
(SIGTERM), elsewhere by polling its parent's pid.
"""

import os
import signal
import sys

PARENT_ENV = "GREENREDIS_PARENT_PID"
PR_SET_PDEATHSIG = 1


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT)."""


class Terminated(SystemExit):
    """SIGTERM: a requested stop."""

    def __init__(self):
        super().__init__(0)


_state = {"signals": 0, "children": []}


def kill_on_hard_exit(proc):
    """Register a ``Popen`` to SIGKILL if the process is ended by a second signal."""
    _state["children"].append(proc)


def _hard_exit(code):
    for proc in _state["children"]:
        try:
            if proc.poll() is None:
                proc.kill()
        except OSError:
            pass
    os._exit(code)


def install():
    """Watch SIGINT/SIGTERM in gevent's loop and keep the hub quiet about them."""
    import gevent
    import greenlet

    hub = gevent.get_hub()
    # Printed by the hub otherwise ("KeyboardInterrupt" with a traceback), before the
    # main greenlet sees it; it still reaches the main greenlet.
    hub.NOT_ERROR = (*type(hub).NOT_ERROR, KeyboardInterrupt)
    # A greenlet that dies of an exception: the hub would print its traceback to stderr,
    # unmasked, under a "<Greenlet at 0x...>" line; one logged (and masked) line instead,
    # the traceback at debug level.
    hub.print_exception = _log_greenlet_death
    main = greenlet.getcurrent()

    def on_signal(exc_type, code):
        _state["signals"] += 1
        if _state["signals"] > 1:  # already stopping: the user wants out now
            sys.stderr.write("\n")
            _hard_exit(code)
        hub.loop.run_callback(main.throw, exc_type)

    gevent.signal_handler(signal.SIGINT, on_signal, Interrupted, 130)
    gevent.signal_handler(signal.SIGTERM, on_signal, Terminated, 143)


def _log_greenlet_death(context, t, v, tb):
    import logging

    run = getattr(context, "_run", None)
    what = getattr(run, "__qualname__", None) or type(context).__name__
    logging.getLogger("greenredis.cli").error("%s died", what, exc_info=(t, v, tb) if t is not None else None)


def stopping():
    """True once a stop was asked for (Ctrl-C or SIGTERM)."""
    return _state["signals"] > 0


def die_with_parent(env=None):
    """When ``$GREENREDIS_PARENT_PID`` is set: end this process (SIGTERM) when that
    parent dies, even by SIGKILL; exit at once if it is already gone."""
    env = os.environ if env is None else env
    text = env.get(PARENT_ENV)
    if not text:
        return
    try:
        parent = int(text)
    except ValueError:
        return
    armed = False
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)
    if not armed:
        import gevent

        def watch():
            while os.getppid() == parent:
                gevent.sleep(1.0)
            os.kill(os.getpid(), signal.SIGTERM)

        gevent.spawn(watch)


# A process of its own that ends ``pid`` (a child that cannot watch us itself, like
# redis-server) when its parent, the process that started it, dies.
_GUARD = """
import os, signal, sys, time
parent, target = int(sys.argv[1]), int(sys.argv[2])
def end(*_):
    try:
        os.kill(target, signal.SIGTERM)
    except OSError:
        pass
    os._exit(0)
signal.signal(signal.SIGTERM, end)
signal.signal(signal.SIGINT, signal.SIG_IGN)
if sys.platform.startswith("linux"):
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)
while os.getppid() == parent:
    time.sleep(1.0)
end()
"""


def guard(pid):
    """Start a guard that SIGTERMs ``pid`` when this process dies (even by SIGKILL);
    returns its ``Popen``: SIGKILL it before stopping ``pid`` yourself."""
    import subprocess

    proc = subprocess.Popen(
        [sys.executable, "-c", _GUARD, str(os.getpid()), str(pid)],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    kill_on_hard_exit(proc)
    return proc
