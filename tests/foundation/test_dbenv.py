"""DATABASE_URL parsing and the embedded-Postgres fallback."""

import subprocess
import sys

import pytest

import dbenv

ROOT = dbenv.PROJECT_ROOT


def test_it_parses_tcp_urls():
    fields = dbenv.parse("postgresql://alice:s%40cret@db.example:6543/protoken")
    assert fields == {"NAME": "protoken", "USER": "alice", "PASSWORD": "s@cret",
                      "HOST": "db.example", "PORT": "6543"}


def test_it_parses_socket_urls():
    fields = dbenv.parse("postgresql://postgres@/postgres?host=/tmp/pg")
    assert fields["HOST"] == "/tmp/pg" and fields["NAME"] == "postgres" and fields["PORT"] == ""


def test_it_refuses_other_databases_by_name():
    with pytest.raises(dbenv.DatabaseURLError, match="mysql"):
        dbenv.parse("mysql://root@localhost/x")


def test_it_converts_driver_prefixes():
    url = "postgresql://postgres@127.0.0.1:5432/protoken"
    assert dbenv.sqlalchemy_url(url) == "postgresql+psycopg://postgres@127.0.0.1:5432/protoken"
    assert dbenv.with_database(url, "test_protoken").endswith("/test_protoken")


@pytest.mark.slow
def test_it_starts_and_stops_an_embedded_postgres(tmp_path):
    """With no DATABASE_URL a real server starts in PROTOKEN_VAR_DIR and stops at exit."""
    script = (
        "import dbenv, psycopg\n"
        "url = dbenv.database_url()\n"
        "with psycopg.connect(url) as c: print(c.execute('show server_version').fetchone()[0])\n"
    )
    env = {"PROTOKEN_VAR_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    for _ in range(2):  # the second run reuses the data folder
        out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().split(".")[0].isdigit()
    assert (tmp_path / "pg" / "PG_VERSION").exists()
    assert not (tmp_path / "pg" / "postmaster.pid").exists()  # stopped cleanly


def test_its_cli_explains_itself_and_names_a_bad_command():
    import subprocess
    import sys

    ok = subprocess.run([sys.executable, "-m", "dbenv", "--help"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "ensure" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "dbenv", "frobnicate"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "'frobnicate'" in bad.stderr
