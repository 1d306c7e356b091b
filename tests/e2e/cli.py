"""The real python-openstackclient for the end-to-end tests: `openstack ARGS` run as its console
script runs it (``openstackclient.shell.main``), each command in a process of its own, with its
own environment, output and exit status.

The processes are forked from a server that has imported the client already. A fresh
`openstack` spends ~1.3 s importing before its first request (0.8 s of it in imports, the rest
in finding its plugins), and the suite runs a few hundred commands. One test still runs the
installed console script (`test_token_issue_and_catalog`).

The server is this file run as a script: it reads one JSON request per line on stdin (argv, env,
timeout), forks, and answers with one JSON line (the exit status and what the command printed).
It imports nothing of the project or of Django.
"""

import atexit
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

OPENSTACK = str(Path(sys.executable).parent / "openstack")

# What most commands import on their way (the client's commands load lazily).
PRELOAD = ("openstackclient.shell", "openstackclient.compute.v2.server", "openstackclient.compute.v2.flavor",
           "openstackclient.identity.v3.project", "openstackclient.identity.v3.user",
           "openstackclient.image.v2.image", "openstackclient.network.v2.network",
           "openstackclient.volume.v3.volume", "openstack.compute.v2.server", "openstack.image.v2.image",
           "openstack.network.v2.network", "openstack.block_storage.v3.volume")


class _Server:
    def __init__(self):
        self.lock = threading.Lock()
        self.process = None
        atexit.register(self.stop)

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        self.process = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        env=env, text=True, bufsize=1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def run(self, argv: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
        with self.lock:
            if self.process is None or self.process.poll() is not None:
                self.start()
            self.process.stdin.write(json.dumps({"argv": argv, "env": env, "timeout": timeout}) + "\n")
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError("the openstack command server stopped (its traceback is in the test's stderr)")
            answer = json.loads(line)
        if answer["timed_out"]:
            raise subprocess.TimeoutExpired(["openstack", *argv], timeout, answer["stdout"], answer["stderr"])
        return subprocess.CompletedProcess(["openstack", *argv], answer["code"], answer["stdout"], answer["stderr"])


_server = _Server()


def run(argv, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    """`openstack ARGV` with this environment, as ``subprocess.run(..., capture_output=True,
    text=True)`` would return it; subprocess.TimeoutExpired after ``timeout`` seconds."""
    return _server.run([str(arg) for arg in argv], env, timeout)


def _command(argv: list[str], env: dict, out: int, err: int) -> None:
    """In the forked child: the console script's work, then exit with its status."""
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = ["openstack", *argv]
    try:
        from openstackclient.shell import main

        code = main(argv)
    except SystemExit as exit:  # argparse's errors, as the console script's sys.exit(main()) would end
        code = exit.code if isinstance(exit.code, int) or exit.code is None else 1
        if isinstance(exit.code, str):
            print(exit.code, file=sys.stderr)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


def _serve() -> None:
    sys.argv = ["openstack"]  # the name the client gives itself in its messages, read as it loads
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:  # moved in another release of the client: it loads when a command needs it
            pass
    for line in sys.stdin:
        request = json.loads(line)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                _command(request["argv"], request["env"], out.fileno(), err.fileno())
            deadline = time.monotonic() + request["timeout"]
            while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
                time.sleep(0.005)
            timed_out = done[0] == 0
            if timed_out:
                os.kill(pid, 9)
                done = os.waitpid(pid, 0)
            out.seek(0)
            err.seek(0)
            answer = {"code": os.waitstatus_to_exitcode(done[1]), "timed_out": timed_out,
                      "stdout": out.read().decode(errors="replace"), "stderr": err.read().decode(errors="replace")}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    del sys.path[0]  # this file's directory: none of its modules is the client's business
    _serve()
