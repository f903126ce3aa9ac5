"""A client used across ``os.fork()`` (issue 8 item 2): the child opens its own
connections and never touches the parent's; 0 wrong replies in either process."""

import os
import traceback

import gevent
import redis as redispy

import greenredis


def _child(work):
    """Run ``work`` in a forked child; return the child's pid (it exits with work()'s code)."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = work()
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def _echo_many(r, tag, n, width=1):
    """n ECHOs from ``width`` greenlets; the number whose reply was not their own."""
    wrong = []

    def worker(w):
        for i in range(n // width):
            word = f"{tag}:{w}:{i}"
            try:
                got = r.cmd(["ECHO", word], timeout=5) if i % 5 else r.cmd([["ECHO", word]] * 2, timeout=5)[0]
            except greenredis.TimeoutError as e:  # its reply went to the other process
                got = e
            if got != word.encode():
                wrong.append((word, got))

    gevent.joinall([gevent.spawn(worker, w) for w in range(width)], raise_error=True)
    return len(wrong)


def _exit_code(pid, wait=120):
    for _ in range(wait * 20):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        gevent.sleep(0.05)
    os.kill(pid, 9)
    return "hung"


def test_2_fork_child_and_parent_each_get_their_own_replies(redis_server):
    r = greenredis.Redis(port=redis_server.port)
    r.cmd(["SET", "warm", 1])
    r.cmd(["BLPOP", "nothing", 0.01])  # an idle blocking-command connection too
    sub = r.subscribe("forkchan")
    parent_conn, parent_id = r._shared, r.cmd(["CLIENT", "ID"])

    def child():
        wrong = _echo_many(r, "child", 3000, width=20)
        if r.cmd(["CLIENT", "ID"]) == parent_id:
            return 10  # it must have its own connection
        r.cmd(["RPUSH", "childq", "x"])
        if r.cmd(["BLPOP", "childq", 2]) != [b"childq", b"x"]:
            return 11
        if sub.get(timeout=10) != (b"gap", None, None):  # resubscribed on its own socket
            return 12
        r.cmd(["PUBLISH", "forkchan", "from child"])
        if sub.get(timeout=10) != (b"message", b"forkchan", b"from child"):
            return 13
        return 0 if wrong == 0 else 1

    pid = _child(child)
    wrong = _echo_many(r, "parent", 3000, width=20)  # meanwhile, in the parent
    assert _exit_code(pid) == 0
    assert wrong == 0
    assert r._shared is parent_conn and r.cmd(["CLIENT", "ID"]) == parent_id  # untouched
    redispy.Redis(port=redis_server.port).publish("forkchan", "to parent")
    got = [sub.get(timeout=5), sub.get(timeout=5)]
    assert (b"message", b"forkchan", b"to parent") in got and (b"gap", None, None) not in got
    assert r.cmd(["BLPOP", "nothing", 0.01]) is None
    sub.close()
    r.close()


def test_2_preload_shape_two_workers_forked_from_a_warm_master(redis_server):
    r = greenredis.Redis(port=redis_server.port)
    assert _echo_many(r, "warmup", 200, width=10) == 0  # the master warms its client
    workers = [_child(lambda n=n: min(_echo_many(r, f"worker{n}", 4000, width=50), 100)) for n in range(2)]
    master_wrong = _echo_many(r, "master", 2000, width=10)
    assert [_exit_code(pid) for pid in workers] == [0, 0]
    assert master_wrong == 0
    clients = redispy.Redis(port=redis_server.port).client_list()
    assert len(clients) == 2  # the master's connection and the check client: workers' are gone
