"""Run redis-py's own test suite twice, plain and with the guarded pools swapped in, and list guard-only failures.

    python tools/redis_py_suite.py [--workdir DIR] [--files test_commands.py ...] [-k EXPR]

What it does:
- downloads redis-py's sdist for the installed version (`pip download --no-binary :all:`; it ships `tests/`);
- makes a venv beside it (system site packages + pytest-asyncio, which the suite needs; nothing is installed into
  the interpreter that runs connguard's own tests);
- writes throwaway TLS certificates (openssl) where redis-py's tests look for them;
- starts a throwaway server per run (connguard.lab.servers; `--enable-debug-command local`, a TLS port too);
- runs the subset plain, then with tools/redis_py_suite_plugin.py loaded (pools swapped before collection);
- compares the JUnit XML test by test and prints the guard-only failures grouped by exception, then a table.

Too slow for CI (several minutes per run): run it before landing guard changes. Exit 0 when there is no
guard-only failure, 1 otherwise, 3 when the harness itself could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
sys.path.insert(0, str(SRC))

from connguard.lab.servers import ServerProcess, default_binary, free_port  # noqa: E402

SYNC_FILES = (
    "test_commands.py", "test_pipeline.py", "test_pubsub.py", "test_connection_pool.py", "test_lock.py",
    "test_scripting.py", "test_multiprocessing.py", "test_ssl.py", "test_max_connections_error.py", "test_monitor.py",
    "test_retry.py", "test_connection.py", "test_connect.py", "test_client.py", "test_encoding.py",
    "test_keyspace_notifications.py",
)
ASYNC_FILES = tuple(
    f"test_asyncio/{name}" for name in (
        "test_commands.py", "test_pipeline.py", "test_pubsub.py", "test_connection_pool.py", "test_lock.py",
        "test_scripting.py", "test_ssl.py", "test_monitor.py", "test_retry.py", "test_connection.py", "test_connect.py",
        "test_client.py", "test_encoding.py", "test_cwe_404.py", "test_keyspace_notifications.py",
    )
)
MARKERS = "not onlycluster and not redismod"
EXTRA_PACKAGES = ("pytest-asyncio",)


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# -- preparing ---------------------------------------------------------------------------------------------------
def fetch_sdist(workdir: Path, version: str) -> Path:
    tree = workdir / f"redis-{version}"
    if (tree / "tests" / "conftest.py").exists():
        return tree
    say(f"downloading redis-py {version} sdist")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:", f"redis=={version}", "-d", str(workdir)],
        check=True,
    )
    archive = workdir / f"redis-{version}.tar.gz"
    with tarfile.open(archive) as tar:
        tar.extractall(workdir, filter="data")
    return tree


def make_venv(workdir: Path) -> Path:
    venv = workdir / "venv"
    python = venv / "bin" / "python"
    if not python.exists():
        say("making a venv for the suite (system site packages + pytest-asyncio)")
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *EXTRA_PACKAGES], check=True)
    return python


def make_certs(tree: Path) -> Path:
    """A throwaway CA, a server certificate for localhost/127.0.0.1 and client certificates, named as redis-py's
    tests/ssl_utils.py expects them (dockers/standalone/tls)."""
    tls = tree / "dockers" / "standalone" / "tls"
    if (tls / "ca.crt").exists():
        return tls
    tls.mkdir(parents=True, exist_ok=True)

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tls, check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=connguard-test-ca")
    (tls / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name, cn in (("redis", "localhost"), ("client", "client"), ("test_user", "test_user")):
        ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        ssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", f"{name}.crt",
            "-days", "2", "-extfile", "san.ext")
    return tls


# -- running -------------------------------------------------------------------------------------------------------
@dataclass
class Run:
    label: str
    results: dict[str, tuple[str, str]]  # test id -> (outcome, first line of the failure)
    stats: dict[str, object]
    seconds: float
    server: str


def run_suite(label: str, python: Path, tree: Path, tls: Path, files: list[str], keyword: str | None, guarded: bool, workdir: Path) -> Run:
    tls_port = free_port()
    server = ServerProcess(
        default_binary(),
        extra_args=(
            "--enable-debug-command", "local", "--tls-port", str(tls_port), "--tls-cert-file", str(tls / "redis.crt"),
            "--tls-key-file", str(tls / "redis.key"), "--tls-ca-cert-file", str(tls / "ca.crt"), "--tls-auth-clients", "optional",
        ),
    ).start()
    xml = workdir / f"{label}.xml"
    stats_file = workdir / f"{label}.stats.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(SRC), env.get("PYTHONPATH", "")])
    env["CONNGUARD_SWAP"] = "1" if guarded else "0"
    env["CONNGUARD_SUITE_STATS"] = str(stats_file)
    cmd = [
        str(python), "-m", "pytest", *files, "-m", MARKERS, "-p", "redis_py_suite_plugin", "-p", "no:cacheprovider",
        "-q", "-o", "addopts=", "--timeout", "60", f"--junitxml={xml}",
        f"--redis-url=redis://127.0.0.1:{server.port}/0", f"--redis-ssl-url=rediss://127.0.0.1:{tls_port}",
    ]
    if keyword:
        cmd += ["-k", keyword]
    say(f"{label}: running {len(files)} files against {server.binary.label} on :{server.port} (TLS :{tls_port})")
    started = time.monotonic()
    try:
        with open(workdir / f"{label}.log", "w") as log:
            subprocess.run(cmd, cwd=tree / "tests" / "..", env=env, stdout=log, stderr=subprocess.STDOUT, timeout=3600)
    finally:
        server.stop()
    seconds = time.monotonic() - started
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    return Run(label, parse_junit(xml), stats, seconds, server.binary.label)


def parse_junit(path: Path) -> dict[str, tuple[str, str]]:
    results: dict[str, tuple[str, str]] = {}
    if not path.exists():
        return results
    for case in ET.parse(path).getroot().iter("testcase"):
        # Tests parametrized by the pool class are named after it: the guarded run's `[GuardedConnectionPool]` is
        # the plain run's `[ConnectionPool]`, the same test.
        name = re.sub(r"(?<=[\[-])(?:Async)?Guarded(?=\w*ConnectionPool\])", "", case.get("name") or "")
        test = f"{case.get('classname')}::{name}"
        outcome, detail = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
                detail = (child.get("message") or child.text or "").strip().splitlines()[0:1]
                detail = detail[0] if detail else child.tag
                break
            if child.tag == "skipped":
                outcome = "skipped"
        results[test] = (outcome, detail)
    return results


def exception_of(detail: str) -> str:
    match = re.match(r"([A-Za-z_][\w.]*(?:Error|Exception|Exceeded|Refusal|Warning|Interrupt|Failed)\b)", detail)
    return match.group(1) if match else (detail.split(":", 1)[0][:60] or "unknown")


# -- reporting -----------------------------------------------------------------------------------------------------
def counts(run: Run) -> Counter[str]:
    return Counter(outcome for outcome, _ in run.results.values())


def guard_only_failures(plain: Run, guarded: Run) -> dict[str, str]:
    return {
        t: guarded.results[t][1] for t, (outcome, _) in plain.results.items()
        if outcome == "passed" and guarded.results.get(t, ("missing", ""))[0] == "failed"
    }


def node_id(test: str) -> str:
    """JUnit's `tests.test_asyncio.test_pool.TestPool::test_x[p]` back to pytest's node id."""
    classname, name = test.split("::", 1)
    parts = classname.split(".")
    module_end = max(i for i, part in enumerate(parts) if part.startswith("test_"))
    path = "/".join(parts[: module_end + 1]) + ".py"
    return "::".join([path, *parts[module_end + 1:], name])


def report(plain: Run, guarded: Run, files: list[str], flaky: dict[str, str]) -> int:
    guard_only = {t: d for t, d in guard_only_failures(plain, guarded).items() if t not in flaky}
    missing = sorted(set(plain.results) - set(guarded.results))
    groups: dict[str, list[str]] = defaultdict(list)
    for test, detail in sorted(guard_only.items()):
        groups[exception_of(detail)].append(f"{test}\n      {detail[:200]}")
    if groups:
        print("\nGuard-only failures, grouped by exception:")
        for exc, tests in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            print(f"  {exc} ({len(tests)})")
            for line in tests:
                print(f"    {line}")
    p, g = counts(plain), counts(guarded)
    built = guarded.stats.get("guarded_pools_built", {})
    print()
    print(f"redis-py {redis.__version__} test suite, {plain.server}, Python {sys.version.split()[0]}; "
          f"{len(files)} files (sync + asyncio), markers `{MARKERS}`")
    print()
    print("| run | tests | passed | failed | skipped | time |")
    print("|---|---:|---:|---:|---:|---:|")
    for run, c in ((plain, p), (guarded, g)):
        print(f"| {run.label} | {sum(c.values())} | {c['passed']} | {c['failed']} | {c['skipped']} | {run.seconds:.0f} s |")
    print()
    print(f"guarded pools built: {sum(built.values()) if built else 0} ({', '.join(f'{k} {v}' for k, v in built.items())})")
    print(f"**guard-only failures: {len(guard_only)}**" + (f"; tests missing from the guarded run: {len(missing)}" if missing else ""))
    both = sum(1 for t, (o, _) in plain.results.items() if o == "failed" and guarded.results.get(t, ("",))[0] == "failed")
    print(f"failing in both runs (environment: server version, modules): {both}")
    if flaky:
        print(f"failed once under the guard, passed when re-run alone (timing under load): {len(flaky)}")
        for test, detail in sorted(flaky.items()):
            print(f"    {test}\n      first run: {detail[:200]}")
    if not built or sum(built.values()) == 0:
        print("the swap did not happen: no guarded pool was built", file=sys.stderr)
        return 3
    return 1 if guard_only or missing else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "connguard" / "redis-py-suite")
    parser.add_argument("--files", nargs="*", help="test files relative to redis-py's tests/ (default: the subset)")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression, for a quick look at a few tests")
    parser.add_argument("--guarded-only", action="store_true", help="skip the plain run (reuse the last plain.xml)")
    args = parser.parse_args(argv)
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if shutil.which("openssl") is None:
        print("redis_py_suite: openssl is needed for the TLS certificates", file=sys.stderr)
        return 3
    try:
        tree = fetch_sdist(workdir, redis.__version__)
        python = make_venv(workdir)
        tls = make_certs(tree)
    except (subprocess.CalledProcessError, OSError, tarfile.TarError) as exc:
        print(f"redis_py_suite: cannot prepare the suite: {exc}", file=sys.stderr)
        return 3
    files = [f"tests/{f}" for f in (args.files or SYNC_FILES + ASYNC_FILES) if (tree / "tests" / f).exists()]
    if args.guarded_only and (workdir / "plain.xml").exists():
        plain = Run("plain", parse_junit(workdir / "plain.xml"), {}, 0.0, default_binary().label)
    else:
        plain = run_suite("plain", python, tree, tls, files, args.keyword, False, workdir)
    guarded = run_suite("guarded", python, tree, tls, files, args.keyword, True, workdir)
    flaky: dict[str, str] = {}
    suspects = guard_only_failures(plain, guarded)
    if suspects and len(suspects) <= 20:
        # A guard-only failure is re-run alone, guarded; one that passes then is reported as flaky, not hidden.
        say(f"re-running {len(suspects)} guard-only failure(s) alone")
        again = run_suite("guarded-rerun", python, tree, tls, [node_id(t) for t in suspects], None, True, workdir)
        flaky = {t: d for t, d in suspects.items() if again.results.get(t, ("missing", ""))[0] == "passed"}
    return report(plain, guarded, files, flaky)


if __name__ == "__main__":
    sys.exit(main())
