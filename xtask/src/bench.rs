//! `cargo xtask bench`: runs every benchmark scenario against Switchboard (a gateway and a
//! worker, release builds) and against the reference chat server, alternately, each on a
//! fresh server, and prints one table with the ratios. Same machine, same minute, same load
//! generator: a noisy machine moves both columns, not one.
//!
//! The JSON line of every run is kept in `target/bench/<commit>.jsonl`.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{cargo, run};

/// Packages whose release binaries the benchmark runs.
const PACKAGES: &[&str] = &[
    "switchboard-gateway",
    "switchboard-worker",
    "switchboard-bench",
];
/// How long a server gets to greet a first user.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Loopback source addresses the idle scenario spreads its connections over.
const SOURCES: usize = 8;

/// How big a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Size {
    /// Every scenario at full size (several minutes).
    Full,
    /// Every scenario, short (about a minute).
    Quick,
}

/// One scenario: its `switchboard-bench` arguments and the figures the table compares.
struct Scenario {
    name: &'static str,
    args: Vec<String>,
    /// (JSON field, what it is, lower is better).
    metrics: &'static [(&'static str, &'static str, bool)],
    /// Simulated devices on ptys the gateway opens as serial ports (Switchboard only: the
    /// reference has no devices, its column stays empty).
    ptys: usize,
    /// Also run the floor: the reference with every chat line relayed through a no-op
    /// second process (`chat-reference --relay` / `--echo`).
    floor: bool,
}

const CPU: (&str, &str, bool) = ("cpu_us_per_op", "server CPU per message (µs)", true);
const P99: (&str, &str, bool) = ("p99_us", "p99 latency (µs)", true);
const RATE: (&str, &str, bool) = ("per_s", "delivered/s", false);

fn scenarios(size: Size) -> Vec<Scenario> {
    let full = size == Size::Full;
    let secs = if full { "10" } else { "3" };
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let idle_conns = if full { "19000" } else { "2000" };
    let idle_login_conns = if full { "5000" } else { "1000" };
    let broadcast = |rate: &str| {
        s(&[
            "broadcast",
            "--users",
            "100",
            "--senders",
            "4",
            "--secs",
            secs,
            "--rate",
            rate,
        ])
    };
    vec![
        Scenario {
            name: "private 10k msg/s, 100 users",
            args: s(&[
                "private", "--users", "100", "--secs", secs, "--rate", "10000",
            ]),
            metrics: &[CPU, P99],
            ptys: 0,
            floor: true,
        },
        Scenario {
            name: "private saturation, 100 users, window 8",
            args: s(&["private", "--users", "100", "--secs", secs, "--window", "8"]),
            metrics: &[RATE, CPU],
            ptys: 0,
            floor: true,
        },
        Scenario {
            name: "broadcast 4 senders x 100 users, 2k lines/s",
            args: broadcast("2000"),
            metrics: &[RATE, P99],
            ptys: 0,
            floor: true,
        },
        Scenario {
            name: "broadcast 4 senders x 100 users, 10k lines/s",
            args: broadcast("10000"),
            metrics: &[RATE],
            ptys: 0,
            floor: true,
        },
        Scenario {
            name: "broadcast 4 senders x 100 users, 40k lines/s (past saturation)",
            args: broadcast("40000"),
            metrics: &[RATE, CPU],
            ptys: 0,
            floor: true,
        },
        Scenario {
            name: "overload: 100 users, window 1000, then 5 s quiet",
            args: s(&[
                "overload", "--users", "100", "--secs", secs, "--window", "1000",
            ]),
            metrics: &[
                ("rss_kib_start", "server RSS before (KiB)", true),
                ("rss_kib_peak", "server RSS peak (KiB)", true),
                ("rss_kib_settled", "server RSS after (KiB)", true),
            ],
            ptys: 0,
            floor: false,
        },
        Scenario {
            name: "connect + login, 32 at once",
            args: s(&["connect", "--concurrency", "32", "--secs", secs]),
            metrics: &[
                ("per_s", "logins/s", false),
                ("cpu_us_per_op", "server CPU per login (µs)", true),
            ],
            ptys: 0,
            floor: false,
        },
        Scenario {
            name: "idle connections",
            args: s(&["idle", "--conns", idle_conns, "--hold-secs", "2"]),
            metrics: &[(
                "rss_bytes_per_conn",
                "server RSS per connection (bytes)",
                true,
            )],
            ptys: 0,
            floor: false,
        },
        Scenario {
            // Logged in: each holds a nick, a uid and a room, as an IM user does. Fewer than
            // above because every login is announced to everyone already in the room.
            name: "idle connections, logged in",
            args: s(&[
                "idle",
                "--conns",
                idle_login_conns,
                "--hold-secs",
                "2",
                "--login",
            ]),
            metrics: &[(
                "rss_bytes_per_conn",
                "server RSS per logged-in connection (bytes)",
                true,
            )],
            ptys: 0,
            floor: false,
        },
        Scenario {
            name: "devices: 16 on ptys <-> 16 users, as fast as acks allow",
            args: s(&["devices", "--devices", "16", "--secs", secs]),
            metrics: &[
                ("per_s", "chat frames delivered/s (both ways)", false),
                ("cpu_us_per_op", "server CPU per frame (µs)", true),
                P99,
                (
                    "wire_bytes_per_chat_frame",
                    "wire bytes per chat frame",
                    true,
                ),
                ("text_bytes_per_chat_frame", "text bytes it carries", false),
                ("wire_bytes_per_ack", "wire bytes per ack", true),
            ],
            ptys: 16,
            floor: false,
        },
    ]
}

/// A server under test.
enum Server {
    Switchboard,
    Reference,
    /// The reference relaying every chat line through a no-op second process: the least a
    /// two-process design costs.
    Floor,
}

impl Server {
    fn label(&self) -> &'static str {
        match self {
            Server::Switchboard => "switchboard",
            Server::Reference => "reference",
            Server::Floor => "floor",
        }
    }
}

/// A started server: its processes (killed on drop) and telnet address.
struct Running {
    telnet: SocketAddr,
    /// Where the devices publish their ptys, if the gateway was told to open some.
    pty_dir: Option<PathBuf>,
    children: Vec<(String, Child)>,
    _dir: TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A directory removed on drop (xtask keeps its dependencies few: no tempfile crate).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Builds, runs every scenario on both servers, prints the table.
pub fn bench(root: &Path, size: Size) -> Result<()> {
    let mut build = cargo(&["build", "--release", "--bins"]);
    for p in PACKAGES {
        build.args(["-p", p]);
    }
    run(&mut build)?;
    let bins = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("release");
    let commit = git_commit(root);
    let out_dir = root.join("target").join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let out_path = out_dir.join(format!("{commit}.jsonl"));
    let mut out = std::fs::File::create(&out_path)?;

    let scenarios = scenarios(size);
    let mut rows = Vec::new();
    for (n, scenario) in scenarios.iter().enumerate() {
        let mut reports = Vec::new();
        for server in [Server::Switchboard, Server::Reference, Server::Floor] {
            let skip = match server {
                Server::Switchboard => false,
                Server::Reference => scenario.ptys > 0,
                Server::Floor => !scenario.floor,
            };
            if skip {
                reports.push(Value::Null);
                continue;
            }
            let running = start(&bins, &server, n, scenario.ptys)?;
            let report = drive(&bins, &running, &server, scenario)?;
            writeln!(out, "{report}")?;
            eprintln!(
                "xtask bench: {} on {}: {report}",
                scenario.name,
                server.label()
            );
            reports.push(report);
        }
        for &(field, what, lower_is_better) in scenario.metrics {
            let figure = |r: &Value| r.get(field).and_then(Value::as_f64).unwrap_or(f64::NAN);
            let lost = |r: &Value| r.get("lost").and_then(Value::as_u64).unwrap_or(0);
            rows.push(Row {
                name: format!("{}: {what}", scenario.name),
                switchboard: figure(&reports[0]),
                reference: figure(&reports[1]),
                floor: figure(&reports[2]),
                lower_is_better,
                lost: reports.iter().map(lost).sum(),
            });
        }
    }

    println!("\nSwitchboard vs the reference chat server, commit {commit}, {size:?} run");
    println!("(floor: the reference relaying each chat line through a no-op second process)\n");
    println!(
        "{:<76} {:>12} {:>12} {:>8} {:>12} {:>9}",
        "scenario", "switchboard", "reference", "ratio", "floor", "vs floor"
    );
    for row in rows {
        println!("{}", row.render());
    }
    println!("\nraw reports: {}", out_path.display());
    Ok(())
}

/// One line of the table.
struct Row {
    name: String,
    switchboard: f64,
    reference: f64,
    floor: f64,
    lower_is_better: bool,
    lost: u64,
}

impl Row {
    fn render(&self) -> String {
        let column = |v: f64| {
            if v.is_nan() {
                "-".to_owned()
            } else {
                format!("{v:.1}")
            }
        };
        let ratio = |of: f64| {
            if of.is_nan() || of <= 0.0 || self.switchboard.is_nan() {
                "-".to_owned()
            } else {
                format!("{:.2}x", self.switchboard / of)
            }
        };
        let better = if self.lower_is_better {
            "lower"
        } else {
            "higher"
        };
        let lost = if self.lost > 0 {
            format!("  lost: {}", self.lost)
        } else {
            String::new()
        };
        format!(
            "{:<76} {:>12} {:>12} {:>8} {:>12} {:>9}  ({better} is better){lost}",
            self.name,
            column(self.switchboard),
            column(self.reference),
            ratio(self.reference),
            column(self.floor),
            ratio(self.floor),
        )
    }
}

/// Runs the load generator for `scenario` against `running`; returns its JSON report.
fn drive(bins: &Path, running: &Running, server: &Server, scenario: &Scenario) -> Result<Value> {
    let mut cmd = Command::new(bins.join("switchboard-bench"));
    cmd.args([
        "--telnet",
        &running.telnet.to_string(),
        "--label",
        server.label(),
    ]);
    for (label, child) in &running.children {
        cmd.args(["--watch", &format!("{label}={}", child.id())]);
    }
    for i in 1..=SOURCES {
        cmd.args(["--source", &format!("127.0.0.{i}")]);
    }
    cmd.args(&scenario.args);
    if let Some(dir) = &running.pty_dir {
        cmd.arg("--pty-dir").arg(dir);
    }
    let output = cmd.output().context("running switchboard-bench")?;
    if !output.status.success() {
        bail!(
            "switchboard-bench {:?} failed: {}",
            scenario.args,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let line = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(line.trim()).with_context(|| format!("bad report: {line}"))
}

/// Starts `server` on fresh ports with a fresh data dir and waits until it greets a user.
/// A Switchboard gateway is told to open `ptys` serial ports at `<dir>/ptys/dev<i>`, which
/// the devices scenario creates (the gateway retries until they exist).
fn start(bins: &Path, server: &Server, n: usize, ptys: usize) -> Result<Running> {
    let dir = TempDir(std::env::temp_dir().join(format!(
        "switchboard-bench-{}-{n}-{}",
        std::process::id(),
        server.label()
    )));
    std::fs::create_dir_all(&dir.0)?;
    let telnet = free_port()?;
    let children = match server {
        Server::Reference => vec![("reference".to_owned(), reference(bins, telnet, &[])?)],
        Server::Floor => {
            // The relaying reference retries its connection until the echo listens.
            let relay = free_port()?;
            let echo = reference(bins, relay, &["--echo"])?;
            let chat = reference(bins, telnet, &["--relay", &relay.to_string()])?;
            vec![("reference".to_owned(), chat), ("relay".to_owned(), echo)]
        }
        Server::Switchboard => {
            let (device, worker) = (free_port()?, free_port()?);
            let config = dir.0.join("switchboard.toml");
            let mut text = format!(
                "[gateway]\ntelnet_listen = \"{telnet}\"\ndevice_listen = \"{device}\"\n\
                 worker_listen = \"{worker}\"\n"
            );
            for i in 0..ptys {
                let path = dir.0.join("ptys").join(format!("dev{i}"));
                text.push_str(&format!("[[gateway.serial]]\npath = {path:?}\n"));
            }
            text.push_str(&format!(
                "[worker]\ngateways = [\"{worker}\"]\ndata_dir = {:?}\n",
                dir.0.join("data")
            ));
            std::fs::write(&config, text)?;
            let spawn = |bin: &str| -> Result<Child> {
                Command::new(bins.join(bin))
                    .args(["-c"])
                    .arg(&config)
                    .env("RUST_LOG", "warn")
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(dir.0.join(format!("{bin}.log")))?)
                    .spawn()
                    .with_context(|| format!("starting {bin}"))
            };
            vec![
                ("gateway".to_owned(), spawn("switchboard-gateway")?),
                ("worker".to_owned(), spawn("switchboard-worker")?),
            ]
        }
    };
    let pty_dir = (ptys > 0).then(|| dir.0.join("ptys"));
    if let Some(d) = &pty_dir {
        std::fs::create_dir_all(d)?;
    }
    let running = Running {
        telnet,
        pty_dir,
        children,
        _dir: dir,
    };
    wait_greeting(telnet)?;
    Ok(running)
}

/// Waits until a connection to `telnet` is asked for a nickname.
fn wait_greeting(telnet: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(stream) = TcpStream::connect(telnet) {
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if line.contains("nickname") {
                    return Ok(());
                }
                line.clear();
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("no server greeted on {telnet} within {START_TIMEOUT:?}")
}

/// Starts `chat-reference` on `listen` with `extra` arguments.
fn reference(bins: &Path, listen: SocketAddr, extra: &[&str]) -> Result<Child> {
    Command::new(bins.join("chat-reference"))
        .args(["--listen", &listen.to_string()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting chat-reference")
}

fn free_port() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn git_commit(root: &Path) -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
