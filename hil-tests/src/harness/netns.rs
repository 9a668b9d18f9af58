//! Separate "hosts" on one machine for cluster tests: one network namespace per host, each
//! joined by a veth pair to a Linux bridge whose own address lets the test process (in the
//! root namespace, playing the users' machines) reach every host.
//!
//! Built with the `ip` command (iproute2), so it needs root; [`NetLab::check`] says why it
//! cannot work here, and a test prints that and skips. It starts nothing in a host by itself,
//! routes nothing beyond the bridge and emulates no latency or loss: a host's link is either
//! up or cut ([`NetLab::cut`]).

mod ip;

use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

use tokio::process::Command;

use self::ip::Ip;
use super::process::Proc;

/// Most hosts in one lab: a veth's name carries its host's index in two digits, and the
/// 15-character limit on interface names leaves no room for more.
pub const MAX_HOSTS: usize = 99;
/// Longest host name: it becomes part of a namespace name, which only has to be a file name,
/// but failure messages should stay readable.
const MAX_HOST_NAME: usize = 32;
/// Prefix of every namespace and interface a lab makes, so leftovers are recognisable.
const PREFIX: &str = "swb";
/// Labs (and [`NetLab::check`] probes) made by this process so far. With the pid it makes
/// every name unique among live processes; wrapped to three base-36 digits to fit
/// interface names.
static LABS: AtomicU32 = AtomicU32::new(0);
const LAB_IDS: u32 = 36 * 36 * 36;
/// How long `ip netns exec` may take to exec the program: it only joins the namespace and
/// remounts /sys first, which takes milliseconds.
const EXEC_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// /24 subnets tried before giving up: each is taken unless another interface already routes
/// it (another lab, a leftover of a killed run, a real network).
const SUBNET_ATTEMPTS: u32 = 32;

/// Why network namespaces cannot be made here. Tests print it and skip.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// Namespaces, bridges and veths need root (CAP_NET_ADMIN and CAP_SYS_ADMIN).
    #[error("network namespaces need root; running as uid {0}")]
    NotRoot(u32),
    /// iproute2 is not installed.
    #[error("the `ip` command (iproute2) is not in PATH, /usr/sbin or /sbin")]
    NoIp,
    /// `ip` could not be started.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why it did not start.
        source: std::io::Error,
    },
    /// An `ip` command failed: the kernel or a container refused.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
    /// Every subnet tried was already routed somewhere.
    #[error("no free /24 in 10.128.0.0/9 after {0} tries")]
    NoSubnet(u32),
}

/// One host of a lab.
#[derive(Debug)]
struct Host {
    name: String,
    netns: String,
    /// The veth's end on the bridge, in the root namespace; its peer is `eth0` in `netns`.
    veth: String,
    ip: Ipv4Addr,
}

/// A set of network namespaces ("hosts") on a bridge, removed on drop.
///
/// Each host has `lo` and `eth0` (address `10.X.Y.N/24`, N from 2 in the order given); the
/// bridge in the root namespace has `10.X.Y.1`, so the test process reaches every host and
/// hosts reach each other. Addresses are IPv4 only and usable as soon as [`NetLab::create`]
/// returns. Namespaces, bridge, veths and subnet are unique per process and per lab, so tests
/// run in parallel threads and processes.
///
/// Creating and dropping run `ip` a few times per host and block the calling thread for some
/// milliseconds.
///
/// # Processes in a host
/// Deleting a namespace only removes its name: processes inside keep running, cut off. So
/// [`Drop`] first SIGKILLs every process still in each namespace (`ip netns pids`), then
/// deletes veths, bridge and namespaces. A test is safe whatever the drop order; the tidy
/// pattern is to create the lab first and its [`Proc`]s after it, so the `Proc`s drop (and
/// are killed and reaped) before the lab:
///
/// ```no_run
/// # async fn f(gateway: &std::path::Path, dir: &std::path::Path) {
/// use hil::harness::NetLab;
/// let lab = match NetLab::create(&["gw", "worker"]) {
///     Ok(lab) => lab,
///     Err(why) => return println!("netns unavailable: {why}; skipped"),
/// };
/// let mut gw = lab.spawn("gw", "gateway", gateway, &["-c", "gw.toml"], &dir.join("gw.log"));
/// lab.cut("gw");
/// // ...
/// gw.kill().await;
/// # }
/// ```
///
/// A run killed before its labs drop (Ctrl-C, SIGKILL) leaves `swb-*` namespaces and `swb*`
/// links behind; a later process with the same pid removes those of its pid before it makes
/// its first lab, and `ip netns list` / `ip link` show the rest.
#[derive(Debug)]
pub struct NetLab {
    ip: Ip,
    bridge: String,
    bridge_ip: Ipv4Addr,
    hosts: Vec<Host>,
    /// Interfaces made in the root namespace, bridge first; removed in reverse order.
    links: Vec<String>,
    /// Namespaces made so far.
    namespaces: Vec<String>,
}

impl NetLab {
    /// Cheaply checks that this process can make network namespaces and run programs in
    /// them: it is root, `ip` exists, and `ip netns add` and `ip netns exec` work.
    pub fn check() -> Result<(), Unavailable> {
        let ip = Ip::find()?;
        check_root()?;
        let probe = format!("{PREFIX}-{}-check", next_tag(&ip));
        ip.run(["netns", "add", &probe])?;
        let mut exec: Vec<&OsStr> = ["netns", "exec", &probe].map(OsStr::new).into();
        exec.push(ip.path().as_os_str());
        exec.extend(["link", "show", "lo"].map(OsStr::new));
        let exec = ip.run(exec);
        ip.remove_netns(&probe);
        exec.map(drop)
    }

    /// Makes one namespace per name in `hosts`, a bridge, and a veth from each host's `eth0`
    /// to the bridge. Panics on invalid host names (empty, duplicated, more than 32 characters
    /// or other than ASCII letters, digits, `-` and `_`) or more than [`MAX_HOSTS`].
    pub fn create(hosts: &[&str]) -> Result<Self, Unavailable> {
        validate_hosts(hosts);
        let ip = Ip::find()?;
        check_root()?;
        let tag = next_tag(&ip);
        let mut lab = Self {
            ip,
            bridge: format!("{PREFIX}{tag}br"),
            bridge_ip: Ipv4Addr::UNSPECIFIED,
            hosts: Vec::with_capacity(hosts.len()),
            links: Vec::new(),
            namespaces: Vec::new(),
        };
        // From here on a failure drops `lab`, which removes what was made.
        lab.make_bridge(&tag)?;
        for (index, name) in hosts.iter().enumerate() {
            lab.add_host(&tag, index, name)?;
        }
        Ok(lab)
    }

    /// The address of `host`'s `eth0`. Panics if there is no such host.
    pub fn ip(&self, host: &str) -> Ipv4Addr {
        self.host(host).ip
    }

    /// `host`'s address with `port`.
    pub fn addr(&self, host: &str, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip(host), port))
    }

    /// The bridge's address: where connections from the test process come from.
    pub fn bridge_ip(&self) -> Ipv4Addr {
        self.bridge_ip
    }

    /// The name of `host`'s namespace, for `ip netns exec` or `ip -n`.
    pub fn namespace(&self, host: &str) -> &str {
        &self.host(host).netns
    }

    /// A command that runs `program` inside `host`'s namespace (`ip netns exec NS program`).
    /// `ip netns exec` execs the program, so the child's pid is the program's own.
    pub fn command(&self, host: &str, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(self.ip.path());
        cmd.args(["netns", "exec", self.namespace(host)])
            .arg(program);
        cmd
    }

    /// Starts `program args` in `host`'s namespace as a [`Proc`] named `name`, logging to
    /// `log`, and returns once `ip netns exec` has exec'd the program, so signals from
    /// [`Proc::stop`] and [`Proc::kill`] reach the program itself: until then the pid is
    /// `ip`'s, and a SIGTERM would end `ip` before the program ever ran. (So `program` must
    /// not be `ip`; use [`NetLab::command`] for that.)
    pub fn spawn(&self, host: &str, name: &str, program: &Path, args: &[&str], log: &Path) -> Proc {
        let mut cmd = self.command(host, program);
        cmd.args(args);
        let proc = Proc::spawn_command(name, cmd, log);
        self.wait_exec(&proc);
        proc
    }

    /// Waits until `proc` is no longer `ip` (or has exited), panicking after [`EXEC_WAIT`].
    fn wait_exec(&self, proc: &Proc) {
        let Some(pid) = proc.id() else {
            return;
        };
        let ip = self.ip.path();
        let ip = std::fs::canonicalize(ip).unwrap_or_else(|_| ip.to_owned());
        let deadline = std::time::Instant::now() + EXEC_WAIT;
        loop {
            match std::fs::read_link(format!("/proc/{pid}/exe")) {
                Ok(exe) if exe == ip => {}
                // Another program, or no program any more (an exited child has no exe).
                _ => return,
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{}: `ip netns exec` has not exec'd the program within {EXEC_WAIT:?}; log: {}",
                proc.name(),
                proc.log_path().display()
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Cuts `host` off: its veth's bridge end goes down, so nothing reaches it and it reaches
    /// nothing, while its processes keep running. A connect to it gets no RST: it hangs until
    /// the kernel gives up on ARP, about 3 s, with "No route to host".
    pub fn cut(&self, host: &str) {
        self.set_link(host, "down");
    }

    /// Undoes [`NetLab::cut`]: the link is up and forwarding at once (the bridge runs no STP).
    pub fn restore(&self, host: &str) {
        self.set_link(host, "up");
    }

    fn set_link(&self, host: &str, state: &str) {
        let veth = &self.host(host).veth;
        if let Err(e) = self.ip.run(["link", "set", "dev", veth, state]) {
            panic!("setting {host}'s link {state}: {e}");
        }
    }

    fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name:?} in this lab"))
    }

    /// Makes the bridge and gives it the first address of a /24 nobody else routes.
    fn make_bridge(&mut self, tag: &str) -> Result<(), Unavailable> {
        let bridge = self.bridge.clone();
        // No STP, so a port forwards as soon as it is up, after creation and after a cut.
        self.ip
            .run(["link", "add", &bridge, "type", "bridge", "stp_state", "0"])?;
        self.links.push(bridge.clone());
        self.ip.run(["link", "set", "dev", &bridge, "up"])?;
        for attempt in 0..SUBNET_ATTEMPTS {
            let net = subnet(tag, attempt);
            let [a, b, c, _] = net.octets();
            let mine = Ipv4Addr::new(a, b, c, 1);
            let cidr = format!("{mine}/24");
            self.ip.run(["addr", "add", &cidr, "dev", &bridge])?;
            // Claim, then look: of two labs picking one subnet at once, both see the other
            // and both move on.
            let prefix = format!("{net}/24");
            let routes = self
                .ip
                .run(["-4", "-o", "route", "show", "root", &prefix])?;
            if routes
                .lines()
                .all(|route| route_dev(route) == Some(bridge.as_str()))
            {
                self.bridge_ip = mine;
                return Ok(());
            }
            self.ip.run(["addr", "del", &cidr, "dev", &bridge])?;
        }
        Err(Unavailable::NoSubnet(SUBNET_ATTEMPTS))
    }

    /// Makes `name`'s namespace and its veth to the bridge, and brings `lo` and `eth0` up.
    fn add_host(&mut self, tag: &str, index: usize, name: &str) -> Result<(), Unavailable> {
        let netns = format!("{PREFIX}-{tag}-{name}");
        let veth = format!("{PREFIX}{tag}v{index}");
        let [a, b, c, _] = self.bridge_ip.octets();
        // `validate_hosts` keeps the index under MAX_HOSTS, so this is at most 100.
        let host_ip = Ipv4Addr::new(a, b, c, 2 + index as u8);
        let ip = self.ip.clone();
        ip.run(["netns", "add", &netns])?;
        self.namespaces.push(netns.clone());
        // The peer is made inside the namespace under its final name: nothing to rename.
        ip.run([
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ])?;
        self.links.push(veth.clone());
        ip.run(["link", "set", "dev", &veth, "master", &self.bridge, "up"])?;
        let cidr = format!("{host_ip}/24");
        ip.run(["-n", &netns, "addr", "add", &cidr, "dev", "eth0"])?;
        ip.run(["-n", &netns, "link", "set", "dev", "eth0", "up"])?;
        ip.run(["-n", &netns, "link", "set", "dev", "lo", "up"])?;
        self.hosts.push(Host {
            name: name.to_owned(),
            netns,
            veth,
            ip: host_ip,
        });
        Ok(())
    }
}

impl Drop for NetLab {
    /// Kills what still runs in the hosts, then removes veths, bridge and namespaces.
    /// Errors are ignored: there is nothing better to do with them here.
    fn drop(&mut self) {
        for netns in &self.namespaces {
            self.ip.kill_inside(netns);
        }
        // Deleting a veth's bridge end deletes its peer in the namespace too.
        for link in self.links.iter().rev() {
            let _ = self.ip.run(["link", "del", "dev", link]);
        }
        for netns in &self.namespaces {
            let _ = self.ip.run(["netns", "del", netns]);
        }
    }
}

/// Panics unless `hosts` are valid, distinct and few enough.
fn validate_hosts(hosts: &[&str]) {
    assert!(
        hosts.len() <= MAX_HOSTS,
        "a lab has at most {MAX_HOSTS} hosts, not {}",
        hosts.len()
    );
    for (i, name) in hosts.iter().enumerate() {
        assert!(
            !name.is_empty()
                && name.len() <= MAX_HOST_NAME
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "host name {name:?}: use 1 to {MAX_HOST_NAME} ASCII letters, digits, - or _"
        );
        assert!(!hosts[..i].contains(name), "host {name:?} is listed twice");
    }
}

fn check_root() -> Result<(), Unavailable> {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        Ok(())
    } else {
        Err(Unavailable::NotRoot(uid.as_raw()))
    }
}

/// A tag unique among this process's labs and live processes: pid and lab number in base 36
/// (at most 5 + 1 + 3 characters, so `swb{tag}v99` fits in 15). The first call removes
/// leftovers carrying this pid: no lab of this process exists yet, so they are from a dead
/// process that had the same pid.
fn next_tag(ip: &Ip) -> String {
    static SWEPT: Once = Once::new();
    let pid = std::process::id();
    SWEPT.call_once(|| sweep_pid(ip, pid));
    let n = LABS.fetch_add(1, Ordering::Relaxed) % LAB_IDS;
    format!("{}-{}", base36(pid), base36(n))
}

/// Removes namespaces and links whose tag carries `pid`.
fn sweep_pid(ip: &Ip, pid: u32) {
    let ns_prefix = format!("{PREFIX}-{}-", base36(pid));
    let link_prefix = format!("{PREFIX}{}-", base36(pid));
    if let Ok(list) = ip.run(["netns", "list"]) {
        // Lines are `NAME` or `NAME (id: N)`.
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if name.starts_with(&ns_prefix) {
                ip.remove_netns(name);
            }
        }
    }
    if let Ok(links) = ip.run(["-o", "link", "show"]) {
        // Lines are `INDEX: NAME[@PEER]: <FLAGS> ...`.
        for name in links.lines().filter_map(|l| l.split(": ").nth(1)) {
            let name = name.split('@').next().unwrap_or(name);
            if name.starts_with(&link_prefix) {
                let _ = ip.run(["link", "del", "dev", name]);
            }
        }
    }
}

/// A random /24 in 10.128.0.0/9 (32768 of them), seeded with `tag` and `attempt` besides
/// the per-call random keys of [`std::collections::hash_map::RandomState`].
fn subnet(tag: &str, attempt: u32) -> Ipv4Addr {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(tag.as_bytes());
    h.write_u32(attempt);
    let index = (h.finish() % (128 * 256)) as u32;
    // The index is below 2^15, so both octets fit.
    Ipv4Addr::new(10, 128 + (index >> 8) as u8, (index & 0xff) as u8, 0)
}

/// The `dev` of one line of `ip -o route show`.
fn route_dev(route: &str) -> Option<&str> {
    let mut words = route.split_whitespace();
    words.find(|w| *w == "dev")?;
    words.next()
}

fn base36(mut n: u32) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_in_interface_names() {
        // The largest pid Linux allows (PID_MAX_LIMIT, 2^22) and the last lab number.
        let tag = format!("{}-{}", base36(4_194_304), base36(LAB_IDS - 1));
        assert_eq!(tag, "2hwcg-zzz");
        assert!(format!("{PREFIX}{tag}v{}", MAX_HOSTS - 1).len() <= 15);
        assert!(format!("{PREFIX}{tag}br").len() <= 15);
        assert_eq!(base36(0), "0");
    }

    #[test]
    fn subnets_stay_in_the_private_range() {
        for attempt in 0..1000 {
            let [a, b, _, d] = subnet("x-1", attempt).octets();
            assert_eq!((a, d), (10, 0));
            assert!(b >= 128);
        }
    }

    #[test]
    fn route_dev_reads_the_device() {
        let line = "10.130.5.0/24 dev swb1-0br proto kernel scope link src 10.130.5.1 linkdown";
        assert_eq!(route_dev(line), Some("swb1-0br"));
        assert_eq!(route_dev("unreachable 10.0.0.0/8"), None);
    }
}
