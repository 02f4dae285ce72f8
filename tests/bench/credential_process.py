#!/usr/bin/env python3
"""Benchmark: `keyfed credential-process` with a warm daemon, and what it adds to the AWS CLI.

Prints a Markdown table. Not a test: nothing here passes or fails.

  1. median and p99 wall time of `keyfed credential-process aws` (daemon warm) over N runs,
     interleaved with `/bin/true` in the same loop, so both see the same machine load;
  2. `aws sts get-caller-identity` against moto_server, with credentials from
     credential_process (keyfed) versus the same credentials in environment variables,
     interleaved.

Every `keyfed credential-process` measured must have been answered by the demo's daemon, not
by the no-daemon fallback (which exchanges itself and caches): the script checks that each
answer carries the daemon's current key and that no fallback cache appeared. Each table is
printed with the commit, the machine and the tool versions it was measured with.

Usage: tests/bench/credential_process.py [--runs 300] [--cli-runs 20] [--keyfed PATH]
Needs a release build (cargo build --release) and tests/run's venv (target/interop-venv).
"""

import argparse
import json
import os
import shutil
import stat
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
VENV = ROOT / "target" / "interop-venv" / "bin"


def timed(cmd, env=None):
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{cmd[0]} failed: {done.stderr.decode()}")
    return elapsed, done.stdout


def pct(samples, p):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def fallback_caches(work):
    """Where the no-daemon fallback of credential-process would have cached an exchange."""
    return [work / "runtime" / "keyfed", work / ".cache" / "keyfed"]


def check_daemon_answered(work, demo, documents):
    """Every answer carries the key the demo's daemon holds, over its control socket, and the
    no-daemon fallback never ran (it would have left a cache)."""
    socket = demo / "keyfed.sock"
    if not socket.exists() or not stat.S_ISSOCK(socket.stat().st_mode):
        sys.exit(f"the daemon's control socket {socket} is missing")
    leftovers = [str(c) for c in fallback_caches(work) if c.exists()]
    if leftovers:
        sys.exit(f"credential-process fell back to exchanging itself (cache in {leftovers}): "
                 "the figures would not measure the daemon")
    served = json.loads((demo / "aws" / "credential-process.json").read_text())["AccessKeyId"]
    keys = {json.loads(d)["AccessKeyId"] for d in documents}
    if keys != {served}:
        sys.exit(f"answers carried {sorted(keys)}, the daemon holds {served}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--cli-runs", type=int, default=20)
    parser.add_argument("--keyfed", type=Path, default=RELEASE,
                        help="the keyfed binary to measure (default: the release build)")
    args = parser.parse_args()
    global KEYFED
    KEYFED = args.keyfed.resolve()
    if not KEYFED.exists():
        sys.exit(f"{KEYFED} is missing: cargo build --release")
    if not (VENV / "aws").exists():
        sys.exit("install the interop tools first: tests/run")

    work = Path(tempfile.mkdtemp(prefix="keyfed-bench-"))
    (work / "runtime").mkdir(mode=0o700)
    # keyfed's environment: HOME and XDG_RUNTIME_DIR in the work folder, so a fallback cache
    # would show up where check_daemon_answered looks.
    keyfed_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(work),
        "XDG_RUNTIME_DIR": str(work / "runtime"),
    }
    demo = subprocess.Popen(
        [str(KEYFED), "demo", "--dir", str(work / "demo")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    port = free_port()
    moto = subprocess.Popen(
        [str(VENV / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        config = work / "demo" / "keyfed.toml"
        wait_for(lambda: (work / "demo" / "aws" / "credential-process.json").exists(), "keyfed demo")
        wait_for(lambda: listening(port), "moto")
        process = [str(KEYFED), "--config", str(config), "credential-process", "aws"]
        timed(process, keyfed_env)  # warm the page cache

        keyfed_times, true_times, documents = [], [], []
        for _ in range(args.runs):
            elapsed, document = timed(process, keyfed_env)
            keyfed_times.append(elapsed)
            documents.append(document)
            true_times.append(timed(["/bin/true"])[0])
        check_daemon_answered(work, work / "demo", documents)

        _, document = timed(process, keyfed_env)
        creds = json.loads(document)
        aws_config = work / "aws-config"
        aws_config.write_text(
            f"[default]\ncredential_process = {' '.join(process)}\nregion = us-east-1\n"
        )
        base_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(work),
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        via_process = dict(base_env, AWS_CONFIG_FILE=str(aws_config), AWS_SHARED_CREDENTIALS_FILE="/dev/null")
        via_env = dict(
            base_env,
            AWS_CONFIG_FILE="/dev/null",
            AWS_SHARED_CREDENTIALS_FILE="/dev/null",
            AWS_ACCESS_KEY_ID=creds["AccessKeyId"],
            AWS_SECRET_ACCESS_KEY=creds["SecretAccessKey"],
            AWS_SESSION_TOKEN=creds["SessionToken"],
        )
        cli = [str(VENV / "aws"), "sts", "get-caller-identity", "--endpoint-url", f"http://127.0.0.1:{port}"]
        timed(cli, via_env)
        cli_process, cli_env = [], []
        for _ in range(args.cli_runs):
            cli_process.append(timed(cli, via_process)[0])
            cli_env.append(timed(cli, via_env)[0])
        # The CLI ran keyfed with HOME in the work folder: its runs must not have fallen back.
        check_daemon_answered(work, work / "demo", [document])
    finally:
        demo.terminate()
        moto.terminate()
        demo.wait()
        moto.wait()
        shutil.rmtree(work, ignore_errors=True)

    measured_with = provenance({
        "keyfed": [str(KEYFED), "--version"],
        "aws": [str(VENV / "aws"), "--version"],
    })
    ms = lambda s: f"{s * 1000:.2f} ms"
    k_med, t_med = statistics.median(keyfed_times), statistics.median(true_times)
    p_med, e_med = statistics.median(cli_process), statistics.median(cli_env)
    print(measured_with)
    print()
    print(f"| measure ({args.runs} runs, interleaved) | median | p99 |")
    print("|---|---|---|")
    print(f"| `keyfed credential-process aws` (warm daemon) | {ms(k_med)} | {ms(pct(keyfed_times, 99))} |")
    print(f"| `/bin/true` | {ms(t_med)} | {ms(pct(true_times, 99))} |")
    print(f"| ratio keyfed / true | {k_med / t_med:.2f}× | {pct(keyfed_times, 99) / pct(true_times, 99):.2f}× |")
    print()
    print(measured_with)
    print()
    print(f"| `aws sts get-caller-identity` on moto ({args.cli_runs} runs, interleaved) | median |")
    print("|---|---|")
    print(f"| credentials from `credential_process = keyfed …` | {ms(p_med)} |")
    print(f"| the same credentials in environment variables | {ms(e_med)} |")
    print(f"| overhead of credential_process | {(p_med / e_med - 1) * 100:+.1f} % |")


if __name__ == "__main__":
    main()
