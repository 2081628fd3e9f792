//! One real PostgreSQL server per test binary (Debian's binaries, `initdb` as the `postgres`
//! user when we are root), and a fresh database per test.

use super::{free_port, scratch_dir, spawn_watched};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub struct Postgres {
    port: u16,
    next: AtomicUsize,
}

static POSTGRES: OnceLock<Postgres> = OnceLock::new();

pub fn postgres() -> &'static Postgres {
    POSTGRES.get_or_init(Postgres::start)
}

fn bin(name: &str) -> String {
    let from_path = Command::new("sh").arg("-c").arg(format!("command -v {name}")).output().unwrap();
    if from_path.status.success() {
        return String::from_utf8(from_path.stdout).unwrap().trim().to_owned();
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| panic!("no PostgreSQL `{name}`: run scripts/setup.sh")).display().to_string()
}

impl Postgres {
    fn start() -> Self {
        let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
        let as_user = root.then_some("postgres");
        let dir = scratch_dir("postgres");
        let data = dir.join("data");
        if root {
            // The server refuses to run as root; its files belong to `postgres`.
            let ok = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status().unwrap();
            assert!(ok.success());
        }
        let mut initdb = Command::new(if root { "runuser" } else { "sh" });
        if root {
            initdb.args(["-u", "postgres", "--"]);
        } else {
            initdb.arg("-c").arg("exec \"$@\"").arg("sh");
        }
        let out = initdb
            .arg(bin("initdb"))
            .args(["-D", data.to_str().unwrap(), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let port_s = port.to_string();
        spawn_watched(
            &bin("postgres"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-p",
                &port_s,
                "-k",
                dir.to_str().unwrap(),
                "-c",
                "listen_addresses=127.0.0.1",
            ],
            &dir.join("postgres.log"),
            as_user,
            None,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "PostgreSQL did not start; see {}", dir.join("postgres.log").display());
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { port, next: AtomicUsize::new(0) }
    }

    /// A new, empty database; returns its URL.
    pub async fn fresh_database(&self) -> String {
        let name = format!("test_{}_{}", std::process::id(), self.next.fetch_add(1, Ordering::SeqCst));
        let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        sqlx::any::install_default_drivers();
        let deadline = Instant::now() + Duration::from_secs(30);
        // The port opens slightly before the server accepts logins.
        let mut conn = loop {
            match <sqlx::AnyConnection as sqlx::Connection>::connect(&admin).await {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("cannot connect to the test PostgreSQL: {e}"),
            }
        };
        sqlx::Executor::execute(&mut conn, sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).await.unwrap();
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}
