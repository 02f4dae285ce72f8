#!/usr/bin/env python3
"""Benchmark: keyfed's container-credentials face against nginx serving a same-sized static file.

Prints a Markdown table. Not a test: nothing here passes or fails.

  1. wrk (2 threads, 64 connections, 20 s, --latency) against `GET /aws/demo` on a `keyfed run`
     with three targets, then against nginx serving a JSON file of the same size on loopback,
     one after the other in the same run; with `--baseline PATH`, also against a daemon of that
     other keyfed build (e.g. an older commit) with the same configuration. Each is measured with
     keep-alive connections and with a new connection per request (`Connection: close`), which
     is where per-connection work (keyfed's caps and peer-uid lookup) shows;
  2. the daemon's resident memory idle and after the load, and its CPU time and context
     switches over 60 idle seconds.

Before measuring, the script checks that keyfed's face answered 200 with a credential document
(its size is the size of nginx's file) and that nginx serves that file with 200; after wrk, that
keyfed's own counter of container answers with 200 grew by at least the requests wrk counted.
Each table is printed with the commit, the machine and the tool versions it was measured with.

Usage: tests/bench/endpoint.py [--seconds 20] [--idle 60] [--keyfed PATH] [--baseline PATH]
Needs a release build (cargo build --release), and wrk and nginx (apt-get install wrk nginx).
"""

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import free_port, listening, provenance, wait_for  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RELEASE = ROOT / "target" / "release" / "keyfed"
KEYFED = RELEASE  # --keyfed picks another


def curl(url, header=None):
    """GET `url` with curl: (HTTP status, body)."""
    cmd = ["curl", "-s", "--noproxy", "*", "-o", "-", "-w", "\n%{http_code}", url]
    if header:
        cmd[1:1] = ["-H", header]
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    body, _, code = out.rpartition(b"\n")
    return int(code), body


def container_answers(port):
    """keyfed's count of container-face answers with status 200, from its /metrics."""
    _, text = curl(f"http://127.0.0.1:{port}/metrics")
    found = re.search(rb'keyfed_endpoint_requests_total\{face="container",status="200"\} (\d+)', text)
    return int(found.group(1)) if found else 0


def status(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, in clock ticks


def wrk(url, seconds, header=None, close=False):
    cmd = ["wrk", "-t2", "-c64", f"-d{seconds}s", "--latency", url]
    if header:
        cmd[1:1] = ["-H", header]
    if close:
        cmd[1:1] = ["-H", "Connection: close"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return rps, float(p99.group(1)) * scale, int(errors.group(1)) if errors else 0, requests


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--idle", type=int, default=60)
    parser.add_argument("--keyfed", type=Path, default=RELEASE,
                        help="the keyfed binary to measure (default: the release build)")
    parser.add_argument("--baseline", type=Path,
                        help="another keyfed binary to measure side by side (e.g. an older commit)")
    args = parser.parse_args()
    global KEYFED
    KEYFED = args.keyfed.resolve()
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"install {tool} first: apt-get install wrk nginx")
    if not KEYFED.exists():
        sys.exit(f"{KEYFED} is missing: cargo build --release")

    work = Path(tempfile.mkdtemp(prefix="keyfed-bench-"))
    work.chmod(0o755)
    procs = []
    try:
        demo_dir, run_dir = work / "demo", work / "run"
        procs.append(subprocess.Popen([str(KEYFED), "demo", "--dir", str(demo_dir)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(lambda: (demo_dir / "aws" / "credential-process.json").exists(), "keyfed demo")
        # A daemon of its own against the demo's emulators, with the demo's three targets (and
        # one of the baseline build beside it, when asked).
        config = (demo_dir / "keyfed.toml").read_text()
        config = config.replace('client_secret_file = "client-secret"',
                                f'client_secret_file = "{demo_dir / "client-secret"}"')

        def start(binary, name):
            port = free_port()
            folder = work / name
            folder.mkdir()
            (folder / "keyfed.toml").write_text(
                re.sub(r'listen = \["127.0.0.1:\d+"\]', f'listen = ["127.0.0.1:{port}"]', config))
            daemon = subprocess.Popen([str(binary), "--config", str(folder / "keyfed.toml"), "run"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(daemon)
            wait_for(lambda: listening(port), f"{name}: keyfed run")
            token = (folder / "container-token").read_text()
            url = f"http://127.0.0.1:{port}/aws/demo"
            wait_for(lambda: curl(url, f"Authorization: {token}")[0] == 200,
                     f"{name}: keyfed's first credential")
            code, body = curl(url, f"Authorization: {token}")
            if code != 200 or b'"AccessKeyId"' not in body:
                sys.exit(f"{name}: keyfed's container face answered {code}: {body[:200]!r}")
            return daemon, port, url, token, body

        daemon, port, url, token, body = start(KEYFED, "run")
        baseline = start(args.baseline.resolve(), "baseline") if args.baseline else None
        time.sleep(1)
        rss_idle = status(daemon.pid, "VmRSS")

        static = work / "static"
        (static / "aws").mkdir(parents=True)
        (static / "aws" / "demo").write_bytes(body)
        for path in (static, static / "aws", static / "aws" / "demo"):
            path.chmod(0o755)
        nginx_port = free_port()
        (work / "nginx.conf").write_text(f"""
worker_processes auto;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    server {{
        listen 127.0.0.1:{nginx_port};
        root {static};
        default_type application/json;
    }}
}}
""")
        procs.append(subprocess.Popen(["nginx", "-c", str(work / "nginx.conf"), "-p", str(work)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(lambda: listening(nginx_port), "nginx")
        nginx_url = f"http://127.0.0.1:{nginx_port}/aws/demo"
        code, served = curl(nginx_url)
        if code != 200 or len(served) != len(body):
            sys.exit(f"nginx answered {code} with {len(served)} bytes, not 200 with {len(body)}")

        # Interleaved: keyfed, baseline, nginx with keep-alive, then the same with a new
        # connection per request.
        results = {}
        for close in (False, True):
            answered = container_answers(port)
            results[("keyfed", close)] = wrk(url, args.seconds, f"Authorization: {token}", close)
            answered = container_answers(port) - answered
            k_requests, k_err = results[("keyfed", close)][3], results[("keyfed", close)][2]
            if answered < k_requests - k_err:
                sys.exit(f"wrk counted {k_requests} requests but keyfed answered {answered} with 200")
            if baseline:
                _, _, b_url, b_token, _ = baseline
                results[("baseline", close)] = wrk(b_url, args.seconds, f"Authorization: {b_token}",
                                                   close)
            results[("nginx", close)] = wrk(nginx_url, args.seconds, close=close)
        rss_loaded = status(daemon.pid, "VmRSS")

        cpu0, switches0 = cpu_seconds(daemon.pid), (
            status(daemon.pid, "voluntary_ctxt_switches") + status(daemon.pid, "nonvoluntary_ctxt_switches"))
        threads = sorted(Path(f"/proc/{daemon.pid}/task").iterdir())
        tswitch0 = sum(status(f"{daemon.pid}/task/{t.name}", "voluntary_ctxt_switches") for t in threads)
        time.sleep(args.idle)
        cpu1 = cpu_seconds(daemon.pid)
        tswitch1 = sum(status(f"{daemon.pid}/task/{t.name}", "voluntary_ctxt_switches") for t in threads)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait()
        shutil.rmtree(work, ignore_errors=True)

    tools = {
        "keyfed": [str(KEYFED), "--version"],
        "wrk": ["wrk", "--version"],
        "nginx": ["nginx", "-v"],
    }
    if args.baseline:
        tools["baseline"] = [str(args.baseline.resolve()), "--version"]
    measured_with = provenance(tools)
    print(measured_with)
    print()
    names = {
        "keyfed": "keyfed container face (`GET /aws/demo` with Authorization)",
        "baseline": f"baseline keyfed (`{args.baseline}`), same face",
        "nginx": "nginx, same-sized static file",
    }
    for close in (False, True):
        how = "a new connection per request" if close else "keep-alive"
        print(f"| wrk, 2 threads, 64 connections, {args.seconds} s, {len(body)}-byte JSON, {how} "
              "| requests/s | p99 | non-2xx |")
        print("|---|---|---|---|")
        for who in ("keyfed", "baseline", "nginx"):
            if (who, close) in results:
                rps, p99, err, _ = results[(who, close)]
                print(f"| {names[who]} | {rps:,.0f} | {p99:.2f} ms | {err} |")
        k, n = results[("keyfed", close)], results[("nginx", close)]
        print(f"| ratio keyfed / nginx | {k[0] / n[0]:.2f}× | {k[1] / n[1]:.2f}× | |")
        if ("baseline", close) in results:
            b = results[("baseline", close)]
            print(f"| ratio keyfed / baseline | {k[0] / b[0]:.2f}× | {k[1] / b[1]:.2f}× | |")
        print()
    print(measured_with)
    print()
    print("| daemon with three targets | value |")
    print("|---|---|")
    print(f"| resident memory, idle after start | {rss_idle / 1024:.1f} MiB |")
    print(f"| resident memory, after the wrk run | {rss_loaded / 1024:.1f} MiB |")
    print(f"| CPU time over {args.idle} idle seconds | {cpu1 - cpu0:.2f} s |")
    print(f"| thread wakeups (voluntary context switches) over {args.idle} idle seconds | {tswitch1 - tswitch0} |")


if __name__ == "__main__":
    main()
