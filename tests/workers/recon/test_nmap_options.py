"""The nmap back end with ARL's options, against real nmap and planted services on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import itertools
import os
import shutil
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.ports import PlantedPorts, wildcard_listeners
from workers.recon.nmap import NmapError, nmap_command, nmap_path, os_detection_blocker
from workers.recon.portrun import NMAP, backend, run_port_scan, unsupported
from workers.recon.portscan import PortInfo
from workers.recon.portsettings import FIREWALL_THRESHOLD, HostReport, ScanSettings, scan_settings

SSH_BANNER = b"SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.6\r\n"
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _nmap_installed() -> None:
    if nmap_path() is None:
        if os.environ.get("CI"):
            pytest.fail("nmap is missing in CI (.ci/run installs Debian's nmap)")
        pytest.skip("nmap is not installed (apt-get install nmap)")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Scanners make noise; keep it out of the test output."""


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """nmap resets its probes; that is not an error here."""


class _Banner(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        with contextlib.suppress(OSError):
            self.request.sendall(SSH_BANNER)
            self.request.settimeout(2)
            self.request.recv(256)


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[str, int, int]]:
    """(host, HTTP port, SSH-like port): a Python HTTP server and a listener sending an SSH banner."""
    host = "127.66.40.1"
    servers = [_Server((host, 0), _Quiet), _Server((host, 0), _Banner)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield host, servers[0].server_address[1], servers[1].server_address[1]
    for server in servers:
        server.shutdown()
        server.server_close()


def scan(
    ips: list[str], settings: ScanSettings
) -> tuple[dict[str, dict[int, PortInfo]], dict[str, HostReport], list[tuple[str, int]]]:
    found: dict[str, dict[int, PortInfo]] = {}
    hosts: dict[str, HostReport] = {}
    opened: list[tuple[str, int]] = []
    ran = asyncio.run(
        run_port_scan(
            ips, settings, found, hosts=hosts, on_open=lambda ip, info: opened.append((ip, info.port))
        )
    )
    assert ran == NMAP
    return found, hosts, opened


def test_the_options_reach_nmaps_command_line() -> None:
    settings = scan_settings(
        {
            "use_nmap": True,
            "port_scan_type": "custom",
            "port_custom": "22,80-82",
            "service_detection": True,
            "os_detection": True,
            "host_timeout_type": "custom",
            "host_timeout": 75,
            "port_parallelism": 11,
            "port_min_rate": 333,
        },
        connect_timeout=0.8,
    )
    command = nmap_command("nmap", ["10.0.0.5"], settings)
    flags = dict(itertools.pairwise(command))
    assert flags["-p"] == "22,80-82" and flags["--host-timeout"] == "75000ms"
    assert flags["--min-parallelism"] == "11" and flags["--min-rate"] == "333"
    assert flags["--max-rtt-timeout"] == "800ms" and flags["--max-retries"] == "3"
    assert {"-sT", "-Pn", "-sV", "-O"} <= set(command) and command[-1] == "10.0.0.5"
    every = nmap_command("nmap", ["10.0.0.5"], scan_settings({"port_scan_type": "all"}))
    flags = dict(itertools.pairwise(every))
    assert flags["-p"] == "0-65535" and flags["--host-timeout"] == "600000ms"
    assert (flags["--min-parallelism"], flags["--min-rate"], flags["--max-hostgroup"]) == ("128", "800", "2")
    assert "-sV" not in every and "-O" not in every


def test_nmap_accepts_the_options_and_finds_the_port(services: tuple[str, int, int]) -> None:
    host, http_port, _ = services
    settings = ScanSettings(
        ports=(http_port, http_port + 1), use_nmap=True, host_timeout=30, parallelism=7, min_rate=123
    )
    assert backend(settings) == NMAP and unsupported(settings) == {}
    found, _, opened = scan([host], settings)
    assert set(found[host]) == {http_port} and opened == [(host, http_port)]


def test_service_detection_names_the_planted_services(services: tuple[str, int, int]) -> None:
    host, http_port, ssh_port = services
    found, _, _ = scan(
        [host], ScanSettings(ports=(http_port, ssh_port), use_nmap=True, service_detection=True)
    )
    web, ssh = found[host][http_port], found[host][ssh_port]
    assert web.service == "http" and web.product == "SimpleHTTPServer" and web.version
    assert (ssh.service, ssh.product) == ("ssh", "OpenSSH") and ssh.version.startswith("8.9p1")


def test_os_detection_runs_as_root_or_says_why_not(services: tuple[str, int, int]) -> None:
    host, http_port, _ = services
    settings = ScanSettings(
        ports=(http_port, http_port + 1), use_nmap=True, os_detection=True, nmap_args=("--max-os-tries", "1")
    )
    if os.geteuid() != 0:
        assert "os_detection" in unsupported(settings)
        found, hosts, _ = scan([host], settings)  # nmap runs without -O rather than refusing the scan
        assert set(found[host]) == {http_port} and host not in hosts
        return
    assert unsupported(settings) == {}
    # OS fingerprinting is statistical (one try here): a loaded machine can make one run inconclusive.
    for _ in range(3):
        _, hosts, _ = scan([host], settings)
        if host in hosts:
            break
    os_info = hosts[host].os_info
    assert "Linux" in os_info["name"] and os_info["accuracy"] > 90
    assert os_info["osclass"][0]["osfamily"] == "Linux"
    # As another user nmap refuses -O outright, and the blocker says so beforehand.
    nobody = 65534
    assert os_detection_blocker(euid=nobody) is not None
    refused = subprocess.run(
        [str(nmap_path()), "-O", "-p", str(http_port), host],
        capture_output=True,
        text=True,
        timeout=30,
        user=nobody,
        check=False,
    )
    assert refused.returncode != 0 and "root" in refused.stdout + refused.stderr
    # Root without CAP_NET_RAW (a container that drops it): the blocker sees it, and nmap fails.
    if shutil.which("setpriv") is None:
        return
    drop = ["setpriv", "--bounding-set", "-net_raw", "--inh-caps", "-net_raw", "--"]
    ask = "from workers.recon.nmap import os_detection_blocker; print(os_detection_blocker())"
    said = subprocess.run(
        [*drop, sys.executable, "-c", ask], capture_output=True, text=True, timeout=30, check=True, cwd=ROOT
    )
    assert "CAP_NET_RAW" in said.stdout
    failed = subprocess.run(
        [*drop, str(nmap_path()), "-O", "-p", str(http_port), host],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert failed.returncode != 0 and "raw socket" in failed.stdout + failed.stderr


def test_host_timeout_cuts_a_host_that_drops_syns() -> None:
    host = "127.66.41.1"
    socks = []
    for _ in range(40):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((host, 0))
        listener.listen(0)
        socks += [listener, socket.create_connection(listener.getsockname(), timeout=2)]
    ports = tuple(int(s.getsockname()[1]) for s in socks[::2])
    try:
        started = time.monotonic()
        found, hosts, _ = scan([host], ScanSettings(ports=ports, use_nmap=True, host_timeout=1.0))
        elapsed = time.monotonic() - started
    finally:
        for sock in socks:
            sock.close()
    assert hosts[host].timed_out and host not in found
    assert elapsed < 30, "nmap gives the host up at its timeout instead of retrying it"


def test_a_host_with_more_than_600_open_ports_keeps_only_80_and_443() -> None:
    wall, normal = "127.66.42.1", "127.66.42.2"
    busy = wildcard_listeners()
    if {80, 443} & busy:
        pytest.skip("another process listens on port 80 or 443 of every address")
    many = PlantedPorts([wall], per_host=FIREWALL_THRESHOLD + 5, low=20000, high=40000, seed=6).start()
    web = PlantedPorts([wall], per_host=2, choices=[80, 443]).start()
    few = PlantedPorts([normal], per_host=3, low=20000, high=40000, seed=7).start()
    ports = tuple(sorted(({80, 443} | many.planted[wall] | few.planted[normal]) - busy))
    try:
        found, hosts, opened = scan([wall, normal], ScanSettings(ports=ports, use_nmap=True))
    finally:
        for planted in (many, web, few):
            planted.stop()
    assert set(found[wall]) == {80, 443} and {p for ip, p in opened if ip == wall} == {80, 443}
    assert hosts[wall].firewall and hosts[wall].open_seen == FIREWALL_THRESHOLD + 7
    assert set(found[normal]) == few.planted[normal] and normal not in hosts


def test_an_nmap_failure_is_an_error_with_its_message() -> None:
    settings = ScanSettings(ports=(80,), use_nmap=True, nmap_args=("--no-such-option",))
    with pytest.raises(NmapError, match="no-such-option"):
        scan(["127.66.43.1"], settings)


def test_without_nmap_the_connect_scanner_runs_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    settings = ScanSettings(ports=(80,), use_nmap=True, os_detection=True)
    assert backend(settings) == "connect"
    assert set(unsupported(settings)) == {"use_nmap", "os_detection"}
