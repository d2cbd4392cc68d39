//! A private `clickhouse-server` on loopback for the tests: its config in a
//! temporary directory, bounded waits, killed on drop.
#![allow(dead_code, reason = "each test file uses part of this module")]
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    reason = "a test harness around a real server: it waits on the wall clock and probes with TCP"
)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server; killed (and waited for) on drop.
pub struct ClickHouse {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub http_port: u16,
    pub tcp_port: u16,
}

impl ClickHouse {
    /// Starts a server, or `None` (after a `SKIP:` line) when it is not
    /// installed; panics if it is required (`VOXPLANE_REQUIRE_TOOLS`) or
    /// does not come up within 30 s.
    pub fn start() -> Option<Self> {
        if !testkit::tool("clickhouse-server") {
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let http_port = free_port();
        let tcp_port = free_port();
        write_config(dir.path(), http_port, tcp_port);
        let mut ch = Self {
            child: None,
            dir,
            http_port,
            tcp_port,
        };
        ch.restart();
        Some(ch)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Kills the server (an outage).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        let log = std::fs::File::create(self.dir.path().join("stdout.log")).expect("log file");
        let child = Command::new("clickhouse-server")
            .arg(format!(
                "--config-file={}",
                self.dir.path().join("config.xml").display()
            ))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn clickhouse-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if ping(self.http_port) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log =
            std::fs::read_to_string(self.dir.path().join("log/error.log")).unwrap_or_default();
        panic!("clickhouse-server did not answer within 30 s:\n{log}");
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        self.stop();
    }
}

fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(
        &([127, 0, 0, 1], port).into(),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET /ping HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn write_config(dir: &Path, http_port: u16, tcp_port: u16) {
    let p = |s: &str| -> PathBuf { dir.join(s) };
    for d in ["data", "tmp", "user_files", "format_schemas", "log"] {
        std::fs::create_dir_all(p(d)).expect("mkdir");
    }
    let config = format!(
        r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{log}</log><errorlog>{errlog}</errorlog></logger>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{data}/</path>
  <tmp_path>{tmp}/</tmp_path>
  <user_files_path>{uf}/</user_files_path>
  <format_schema_path>{fs}/</format_schema_path>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mlock_executable>false</mlock_executable>
  <mark_cache_size>67108864</mark_cache_size>
  <uncompressed_cache_size>67108864</uncompressed_cache_size>
  <max_concurrent_queries>20</max_concurrent_queries>
</yandex>
"#,
        log = p("log/server.log").display(),
        errlog = p("log/error.log").display(),
        data = p("data").display(),
        tmp = p("tmp").display(),
        uf = p("user_files").display(),
        fs = p("format_schemas").display(),
    );
    std::fs::write(p("config.xml"), config).expect("config.xml");
    let users = r#"<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>1000000000</max_memory_usage><max_threads>2</max_threads></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
"#;
    std::fs::write(p("users.xml"), users).expect("users.xml");
}
