"""A whole cloud run the way `make run` runs it (the Procfile under honcho: gunicorn, control
worker, agent worker, beat), in its own data dir, Redis database and host name, so that it never
meets another cloud on this machine."""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Response:
    status: int
    headers: dict
    body: dict | None


@dataclass
class Cloud:
    data_dir: Path
    env: dict
    url: str
    admin_password: str = ""
    process: subprocess.Popen | None = None
    # Run the Procfile's agent apart from honcho (which stops every process when one exits), so
    # that a test can kill it and start it again.
    separate_agent: bool = False
    agent: subprocess.Popen | None = None
    _tokens: dict = field(default_factory=dict)

    def manage(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(REPO / "manage.py"), *args],
            env=self.env, cwd=REPO, capture_output=True, text=True, check=check, timeout=timeout,
        )

    def request(self, method: str, path: str, body: dict | None = None, token: str | None = None,
                headers: dict | None = None) -> Response:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        req.add_header("Accept", "application/json")
        if token:
            req.add_header("X-Auth-Token", token)
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                raw, status, hdrs = resp.read(), resp.status, dict(resp.headers)
        except urllib.error.HTTPError as err:
            raw, status, hdrs = err.read(), err.code, dict(err.headers)
        return Response(status, hdrs, json.loads(raw) if raw else None)

    def token(self, username: str = "admin", password: str | None = None, project: str = "admin") -> str:
        key = (username, project)
        if key not in self._tokens:
            resp = self.request("POST", "/identity/v3/auth/tokens", {
                "auth": {
                    "identity": {"methods": ["password"], "password": {"user": {
                        "name": username, "domain": {"name": "Default"},
                        "password": password or self.admin_password}}},
                    "scope": {"project": {"name": project, "domain": {"name": "Default"}}},
                }
            })
            assert resp.status == 201, resp.body
            self._tokens[key] = resp.headers["X-Subject-Token"]
        return self._tokens[key]

    def server(self, server_id: str) -> dict:
        """The server as the admin sees it (a test's polling: each `openstack` run costs ~2 s)."""
        response = self.request("GET", f"/compute/v2.1/servers/{server_id}", token=self.token())
        assert response.status == 200, response.body
        return response.body["server"]

    def console_output(self, server_id: str, token: str | None = None) -> str:
        """The server's console log ("" while it has none to give)."""
        response = self.request("POST", f"/compute/v2.1/servers/{server_id}/action", {"os-getConsoleOutput": {}},
                                token=token or self.token())
        return (response.body or {}).get("output", "") if response.status == 200 else ""

    def wait_for(self, predicate, timeout: float, interval: float = 0.25, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(interval)

    def start(self, testvm_image: Path) -> None:
        self.manage("migrate", "--noinput")
        password_file = self.data_dir / "admin_password"
        self.manage("cloud_bootstrap", "--testvm-image", str(testvm_image), "--password-file", str(password_file))
        self.admin_password = password_file.read_text().strip()
        command = [str(VENV_BIN / "honcho"), "start", "-f", str(REPO / "Procfile")]
        if self.separate_agent:
            command += [name for name in _procfile() if name != "agent"]
            self.start_agent()
        with open(self.data_dir / "cloud.log", "w") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(
                command, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.wait_for(self._web_up, 60, what="the web server")
        self.wait_for(self._host_up, 60, what="the agent's first heartbeat")

    def _web_up(self) -> bool:
        try:
            return self.request("GET", "/identity/v3").status == 200
        except OSError:
            return False

    def _host_up(self) -> bool:
        out = self.manage("host_list").stdout
        return any(line.startswith(self.env["CLOUDMGR_HOSTNAME"] + " ") and " up " in line for line in out.splitlines())

    def start_agent(self) -> None:
        """The Procfile's agent line as honcho runs it, in a session of its own (``separate_agent``)."""
        with open(self.data_dir / "agent.log", "a") as log:
            self.agent = subprocess.Popen(
                ["sh", "-c", "exec " + _procfile()["agent"]], env=self.env, cwd=REPO, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )

    def kill_agent(self, sig: int = signal.SIGKILL) -> None:
        if self.agent and self.agent.poll() is None:
            os.killpg(self.agent.pid, sig)
            try:
                self.agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.agent.pid, signal.SIGKILL)
                self.agent.wait()

    def stop(self) -> None:
        self.kill_agent(signal.SIGTERM)
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self._destroy_leftover_domains()
        self._remove_data_plane()

    def _remove_data_plane(self) -> None:
        """This cloud's bridges, namespaces and dnsmasqs (they carry its agent's owner tag and
        outlive the agent): a resync to nothing."""
        from agents.network import linux
        from agents.network.config import load_network_config
        from agents.network.driver import LinuxNetworkDriver
        from agents.network.firewall import Firewall
        from agents.network.l2 import external_table
        from agents.specs import HostNetworkState

        config = load_network_config(self.env)
        LinuxNetworkDriver(config, extensions=[]).resync(HostNetworkState())
        with linux.iproute() as ipr:  # its external bridge is the host's (untagged): ours to remove here
            linux.delete_link(ipr, config.external_bridge)
        subprocess.run(["nft", "delete", "table", "ip", external_table(config.external_bridge)], capture_output=True,
                       check=False)
        Firewall(owner=config.owner).sync([])  # its nftables tables too

    def _destroy_leftover_domains(self) -> None:
        """Domains whose disks live in this cloud's data dir (a failed test may leave some)."""
        import libvirt

        conn = libvirt.open("qemu:///system")
        try:
            for dom in conn.listAllDomains():
                try:
                    if str(self.data_dir) in dom.XMLDesc():
                        if dom.isActive():
                            dom.destroy()
                        dom.undefine()
                except libvirt.libvirtError:
                    pass  # gone meanwhile (another cloud's domain, or ours finishing its delete)
        finally:
            conn.close()

    def log_tail(self, lines: int = 80) -> str:
        tails = []
        for name in ("cloud.log", "agent.log"):
            path = self.data_dir / name
            if path.exists():
                tails += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(tails)


def _procfile() -> dict[str, str]:
    """The Procfile's processes: name -> command."""
    lines = (REPO / "Procfile").read_text().splitlines()
    return dict(line.split(":", 1) for line in lines if line.strip() and not line.startswith("#"))


def make_cloud(base_dir: Path) -> Cloud:
    name = "e2e-" + secrets.token_hex(3)
    data_dir = base_dir / name
    data_dir.mkdir(parents=True)
    port, console_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(
        PATH=f"{VENV_BIN}:{env.get('PATH', '')}",
        CLOUDMGR_DATA_DIR=str(data_dir),
        CLOUDMGR_HOSTNAME=name,
        CLOUDMGR_CONTROL_QUEUE=f"control.{name}",
        CLOUDMGR_LISTEN=f"127.0.0.1:{port}",
        CLOUDMGR_PUBLIC_URL=f"http://127.0.0.1:{port}",
        CLOUDMGR_CONSOLE_LISTEN=f"127.0.0.1:{console_port}",
        CLOUDMGR_CONSOLE_URL=f"http://127.0.0.1:{console_port}",
        CELERY_BROKER_URL=os.environ.get("CLOUDMGR_E2E_BROKER_URL", "redis://127.0.0.1:6379/15"),
        CLOUDMGR_HEARTBEAT_INTERVAL="2",
        # Its own external network (host bridge and range): clouds running at once never share one.
        CLOUDMGR_EXTERNAL_BRIDGE=f"brx-{name[4:]}",
        CLOUDMGR_EXTERNAL_CIDR=f"100.{64 + secrets.randbelow(64)}.{secrets.randbelow(256)}.1/24",
        PYTHONUNBUFFERED="1",
    )
    return Cloud(data_dir=data_dir, env=env, url=f"http://127.0.0.1:{port}")
