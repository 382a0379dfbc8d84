"""Tuning on a real PostgreSQL server: workers share one study through an RDB URL.

The module starts a throwaway cluster on loopback (initdb into a temporary directory, pg_ctl on a
free port, its socket in the same directory, password authentication over TCP) and stops it at
the end. Debian's ``postgresql`` package provides the binaries (``.ci/run`` installs it); the
tests skip, saying so, only where they are absent. initdb refuses to run as root, so as root the
server runs as the package's ``postgres`` user.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from test_tune import SUITE_TUNE, TINY, check_shared_study, free_port, quiet, study_of, tcfg

from suite.tune.storage import mask_url
from suite.tune.tuner import tune_cell
from suite.types import StoreError

USER, PASSWORD = "optsuite", "pg-test-s3cret"


def server_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    which = shutil.which("initdb")
    return Path(found[-1]).parent if found else Path(which).parent if which else None


@pytest.fixture(scope="module")
def server():
    """(host port, run-as prefix) of a fresh cluster; stopped and deleted afterwards."""
    bindir = server_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    root = Path(tempfile.mkdtemp(prefix="optsuite-pg-"))  # /tmp itself: the server user must reach it
    as_user: list[str] = []
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")  # created by Debian's postgresql package
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    pwfile, data = root / "pw", root / "data"
    pwfile.write_text(PASSWORD + "\n")
    if as_user:
        os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
    port = free_port()
    run = lambda *cmd: subprocess.run([*as_user, *map(str, cmd)], check=True, capture_output=True, text=True,
                                      timeout=120)
    try:
        run(bindir / "initdb", "-D", data, "-U", USER, f"--pwfile={pwfile}", "--auth-local=trust",
            "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
        run(bindir / "pg_ctl", "-D", data, "-l", root / "log", "-w", "-t", "60", "start", "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50")
    except subprocess.CalledProcessError as e:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"could not start a PostgreSQL cluster: {e.stderr or e.stdout}")
    yield port
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                   capture_output=True, timeout=60)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def database(server, request) -> str:
    """A fresh database per test (the cluster is shared), as a URL with its password."""
    import psycopg2

    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name).lower()[:50]
    admin = psycopg2.connect(host="127.0.0.1", port=server, user=USER, password=PASSWORD, dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{server}/{name}"


def test_three_workers_share_one_study_through_postgresql(tmp_path, database):
    args = [SUITE_TUNE, *TINY, f"results_dir={tmp_path}", "tune.n_trials=12", f"tune.storage={database}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with ThreadPoolExecutor(3) as pool:
        procs = list(pool.map(lambda _: subprocess.run(args, capture_output=True, text=True, timeout=300, env=env),
                              range(3)))
    for p in procs:
        assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
        assert PASSWORD not in p.stdout + p.stderr and mask_url(database) in p.stdout
    trained = sum(int(p.stdout.split(" trained by this worker")[0].rsplit(" ", 1)[1]) for p in procs)
    check_shared_study(tcfg(tmp_path, f"tune.storage={database}"), 12, trained)


def test_a_postgresql_study_continues_to_n_trials(tmp_path, database):
    first = tune_cell(tcfg(tmp_path, "tune.n_trials=2", f"tune.storage={database}"), echo=quiet)
    second = tune_cell(tcfg(tmp_path, "tune.n_trials=3", f"tune.storage={database}"), echo=quiet)
    assert (first["n_run_here"], second["n_run_here"], second["n_finished"]) == (2, 1, 3)
    assert len(study_of(tcfg(tmp_path, f"tune.storage={database}")).trials) == 3
    assert second["storage"] == mask_url(database) and PASSWORD not in str(second)


def test_a_wrong_password_is_one_clear_error_without_the_password(tmp_path, database):
    wrong = database.replace(PASSWORD, "not-the-password")
    with pytest.raises(StoreError) as e:
        tune_cell(tcfg(tmp_path, f"tune.storage={wrong}"), echo=quiet)
    assert mask_url(wrong) in str(e.value) and "not-the-password" not in str(e.value)
    assert "password authentication failed" in str(e.value)
