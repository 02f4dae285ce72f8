#!/usr/bin/env python3
"""Benchmark: keyfed's credential faces against nginx serving a same-sized static file.

Prints Markdown tables. Not a test: nothing here passes or fails.

  1. wrk (2 threads, 64 connections, 20 s, --latency) against each face of a `keyfed run` with
     the demo's targets — the container face (`GET /aws/demo` with `Authorization`), IMDSv2
     (`GET …/security-credentials/aws` with a session token) and the GCE metadata face
     (`GET …/service-accounts/default/token` with `Metadata-Flavor: Google`) — then against
     nginx serving a JSON file of the same size on loopback, one after the other in the same
     run; with `--baseline PATH`, also against a daemon of that other keyfed build (e.g. an
     older commit) with the same configuration, for the faces it has (a build without Google
     Cloud gets the configuration without its GCP target). Each is measured with keep-alive
     connections and with a new connection per request (`Connection: close`), which is where
     per-connection work (keyfed's caps and peer-uid lookup) shows, in `--rounds` interleaved
     rounds whose median is reported (the machine is shared and noisy);
  2. the daemon's resident memory idle and after the load, and its CPU time and context
     switches over 60 idle seconds.

Before measuring, the script checks that each keyfed face answered 200 with a credential
document (its size is the size of nginx's file) and that nginx serves that file with 200; after
wrk, that keyfed's own counter of that face's answers with 200 grew by at least the requests wrk
counted.
Each table is printed with the commit, the machine and the tool versions it was measured with.

Usage: tests/bench/endpoint.py [--seconds 20] [--rounds 3] [--idle 60] [--keyfed PATH]
       [--baseline PATH [--old-baseline]]
Needs a release build (cargo build --release), and wrk and nginx (apt-get install wrk nginx).
"""

import argparse
import re
import shutil
import statistics
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


def answers(port, face):
    """keyfed's count of `face`'s answers with status 200, from its /metrics."""
    _, text = curl(f"http://127.0.0.1:{port}/metrics")
    pattern = rb'keyfed_endpoint_requests_total\{face="%s",status="200"\} (\d+)' % face.encode()
    found = re.search(pattern, text)
    return int(found.group(1)) if found else 0


def imds_token(port):
    """An IMDSv2 session token from keyfed at `port`."""
    out = subprocess.run(
        ["curl", "-s", "--noproxy", "*", "-X", "PUT", "-H", "X-aws-ec2-metadata-token-ttl-seconds: 21600",
         f"http://127.0.0.1:{port}/latest/api/token"], capture_output=True, text=True, check=True)
    return out.stdout


# Each face: its metrics label, its path, the header its SDKs send (given the daemon's folder and
# port), the marker of a credential in its body, and whether a build before Google Cloud has it.
FACES = [
    ("container", "/aws/demo", lambda folder, port: f"Authorization: {(folder / 'container-token').read_text()}",
     b'"AccessKeyId"', True),
    ("imds", "/latest/meta-data/iam/security-credentials/aws",
     lambda folder, port: f"X-aws-ec2-metadata-token: {imds_token(port)}", b'"AccessKeyId"', True),
    ("gce", "/computeMetadata/v1/instance/service-accounts/default/token",
     lambda folder, port: "Metadata-Flavor: Google", b'"access_token"', False),
    ("azure-imds", "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com",
     lambda folder, port: "Metadata: true", b'"access_token"', False),
    ("app-service", "/msi/token?api-version=2019-08-01&resource=https://management.azure.com",
     lambda folder, port: f"X-IDENTITY-HEADER: {(folder / 'identity-header').read_text()}",
     b'"access_token"', False),
]


def without_gcp(config):
    """The demo configuration without its Google Cloud and Azure targets, for a build that
    predates them."""
    config = re.sub(r'\n# Google Cloud:.*?(?=\n# A token for your own API)', "\n", config, flags=re.S)
    return re.sub(r'\n(gce|azure)_target = "[a-z]+"', "", config)


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


def median_run(runs):
    """The median requests/s and p99 of several wrk runs, their non-2xx summed."""
    return (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs),
            sum(r[2] for r in runs), sum(r[3] for r in runs))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--idle", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds per face and mode; each figure is the median of its rounds")
    parser.add_argument("--keyfed", type=Path, default=RELEASE,
                        help="the keyfed binary to measure (default: the release build)")
    parser.add_argument("--baseline", type=Path,
                        help="another keyfed binary to measure side by side (e.g. an older commit)")
    parser.add_argument("--old-baseline", action="store_true",
                        help="the baseline predates Google Cloud: give it the AWS faces only")
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
        config = config.replace('ca_file = "azure/entra-ca.pem"',
                                f'ca_file = "{demo_dir / "azure" / "entra-ca.pem"}"')

        def start(binary, name, old):
            """A daemon of `binary`: its pid, port, and per face (url, header, body)."""
            port = free_port()
            folder = work / name
            folder.mkdir()
            text = without_gcp(config) if old else config
            (folder / "keyfed.toml").write_text(
                re.sub(r'listen = \["127.0.0.1:\d+"\]', f'listen = ["127.0.0.1:{port}"]', text))
            daemon = subprocess.Popen([str(binary), "--config", str(folder / "keyfed.toml"), "run"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(daemon)
            wait_for(lambda: listening(port), f"{name}: keyfed run")
            faces = {}
            for face, path, header_of, marker, in_old in FACES:
                if old and not in_old:
                    continue
                url = f"http://127.0.0.1:{port}{path}"
                wait_for(lambda: curl(url, header_of(folder, port))[0] == 200,
                         f"{name}: keyfed's first credential on the {face} face")
                header = header_of(folder, port)
                code, body = curl(url, header)
                if code != 200 or marker not in body:
                    sys.exit(f"{name}: keyfed's {face} face answered {code}: {body[:200]!r}")
                faces[face] = (url, header, body)
            return daemon, port, faces

        daemon, port, faces = start(KEYFED, "run", False)
        baseline = start(args.baseline.resolve(), "baseline", args.old_baseline) if args.baseline else None
        time.sleep(1)
        rss_idle = status(daemon.pid, "VmRSS")

        static = work / "static"
        static.mkdir()
        static.chmod(0o755)
        for face, (_, _, body) in faces.items():
            (static / face).write_bytes(body)
            (static / face).chmod(0o644)
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
        for face, (_, _, body) in faces.items():
            code, served = curl(f"http://127.0.0.1:{nginx_port}/{face}")
            if code != 200 or len(served) != len(body):
                sys.exit(f"nginx answered {code} with {len(served)} bytes, not 200 with {len(body)}")

        # Per face and connection mode, `rounds` rounds of keyfed, baseline, nginx one after the
        # other (interleaved, so a noisy neighbour's minute hits all of them); each keeps the
        # median of its rounds.
        runs = {}
        for face, (url, header, _) in faces.items():
            for close in (False, True):
                for _ in range(args.rounds):
                    answered = answers(port, face)
                    run = wrk(url, args.seconds, header, close)
                    answered = answers(port, face) - answered
                    if answered < run[3] - run[2]:
                        sys.exit(f"{face}: wrk counted {run[3]} requests but keyfed answered "
                                 f"{answered} with 200")
                    runs.setdefault((face, "keyfed", close), []).append(run)
                    if baseline and face in baseline[2]:
                        b_url, b_header, _ = baseline[2][face]
                        runs.setdefault((face, "baseline", close), []).append(
                            wrk(b_url, args.seconds, b_header, close))
                    runs.setdefault((face, "nginx", close), []).append(
                        wrk(f"http://127.0.0.1:{nginx_port}/{face}", args.seconds, close=close))
        results = {key: median_run(value) for key, value in runs.items()}
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
    paths = {face: path for face, path, _, _, _ in FACES}
    for face, (_, header, body) in faces.items():
        names = {
            "keyfed": f"keyfed {face} face (`GET {paths[face]}` with {header.split(':')[0]})",
            "baseline": f"baseline keyfed (`{args.baseline}`), same face",
            "nginx": "nginx, same-sized static file",
        }
        for close in (False, True):
            how = "a new connection per request" if close else "keep-alive"
            print(f"| wrk, 2 threads, 64 connections, median of {args.rounds} × {args.seconds} s, "
                  f"{len(body)}-byte JSON, {how} | requests/s | p99 | non-2xx |")
            print("|---|---|---|---|")
            for who in ("keyfed", "baseline", "nginx"):
                if (face, who, close) in results:
                    rps, p99, err, _ = results[(face, who, close)]
                    print(f"| {names[who]} | {rps:,.0f} | {p99:.2f} ms | {err} |")
            k, n = results[(face, "keyfed", close)], results[(face, "nginx", close)]
            print(f"| ratio keyfed / nginx | {k[0] / n[0]:.2f}× | {k[1] / n[1]:.2f}× | |")
            if (face, "baseline", close) in results:
                b = results[(face, "baseline", close)]
                print(f"| ratio keyfed / baseline | {k[0] / b[0]:.2f}× | {k[1] / b[1]:.2f}× | |")
            print()
    print(measured_with)
    print()
    print("| daemon with the demo's targets | value |")
    print("|---|---|")
    print(f"| resident memory, idle after start | {rss_idle / 1024:.1f} MiB |")
    print(f"| resident memory, after the wrk run | {rss_loaded / 1024:.1f} MiB |")
    print(f"| CPU time over {args.idle} idle seconds | {cpu1 - cpu0:.2f} s |")
    print(f"| thread wakeups (voluntary context switches) over {args.idle} idle seconds | {tswitch1 - tswitch0} |")


if __name__ == "__main__":
    main()
