//! The real firmware as a device in the chat: one QEMU `mps2-an385` process per device,
//! over a serial bridge (UART0) or QEMU's user-mode network (LAN9118 Ethernet).
//!
//! The device id (and, for Ethernet, the gateway's port) reach the firmware through
//! `-append`, which QEMU hands to semihosting's `SYS_GET_CMDLINE`; so every device runs the
//! same ELF. A [`QemuDevice`] can be killed and booted again (a reset, or a power cycle)
//! without losing its serial bridge. Its log is QEMU's stderr plus the decoded defmt
//! stream, printed when a test fails.

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::bridge::{BridgeStats, Direction, SerialBridge};
use super::defmt::spawn_decoder;
use super::firmware::{firmware, path_str, Firmware, QEMU_ETH, QEMU_UART};
use super::proxy::TcpProxy;
use crate::harness::{tail, Cluster};

/// How long QEMU gets to start and connect its UART socket.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of the device log printed when a test fails.
const LOG_TAIL_LINES: usize = 80;

/// The QEMU binary: `qemu-system-arm`, or `$QEMU_SYSTEM_ARM` if set.
pub fn qemu_program() -> String {
    std::env::var("QEMU_SYSTEM_ARM").unwrap_or_else(|_| "qemu-system-arm".to_owned())
}

/// How the device reaches the gateway.
pub enum Link {
    /// UART0 through a serial bridge; the gateway opens the bridge's pty as a serial port.
    Uart(SerialBridge),
    /// Ethernet: the firmware connects out to the gateway's device port.
    Eth {
        /// The gateway's device port on the host's loopback.
        gateway: SocketAddr,
        /// A proxy the firmware connects to instead, to inject bytes into the stream.
        proxy: Option<TcpProxy>,
    },
}

/// One emulated board running the real firmware.
pub struct QemuDevice {
    id: String,
    firmware: &'static Firmware,
    link: Link,
    dir: PathBuf,
    /// QEMU's stderr and the decoded defmt lines of every boot.
    log: PathBuf,
    qemu: Option<Child>,
    decoder: Option<JoinHandle<()>>,
    boots: u32,
    booted_at: Instant,
}

impl QemuDevice {
    /// Boots the UART firmware as device `id` on the cluster's serial port `id` (the
    /// cluster must have been started with `ClusterOptions::serial(id)`).
    pub async fn uart(cluster: &Cluster, id: &str) -> Self {
        let fw = firmware(QEMU_UART);
        let bridge = SerialBridge::start(&cluster.serial_path(id))
            .await
            .unwrap_or_else(|e| panic!("{id}: starting the serial bridge: {e}"));
        Self::boot_new(id, fw, Link::Uart(bridge), cluster.dir()).await
    }

    /// Boots the Ethernet firmware as device `id`, connecting to the cluster's device port.
    pub async fn eth(cluster: &Cluster, id: &str) -> Self {
        let fw = firmware(QEMU_ETH);
        let link = Link::Eth {
            gateway: cluster.device_addr,
            proxy: None,
        };
        Self::boot_new(id, fw, link, cluster.dir()).await
    }

    /// [`QemuDevice::eth`] through a [`TcpProxy`], so the test can inject bytes.
    pub async fn eth_via_proxy(cluster: &Cluster, id: &str) -> Self {
        let fw = firmware(QEMU_ETH);
        let proxy = TcpProxy::start(cluster.device_addr)
            .await
            .unwrap_or_else(|e| panic!("{id}: starting the TCP proxy: {e}"));
        let link = Link::Eth {
            gateway: cluster.device_addr,
            proxy: Some(proxy),
        };
        Self::boot_new(id, fw, link, cluster.dir()).await
    }

    /// Boots `fw` as device `id` on `link`, with its files in `dir`.
    pub async fn boot_new(id: &str, fw: &'static Firmware, link: Link, dir: &Path) -> Self {
        let mut dev = Self {
            id: id.to_owned(),
            firmware: fw,
            link,
            dir: dir.to_owned(),
            log: dir.join(format!("qemu-{id}.txt")),
            qemu: None,
            decoder: None,
            boots: 0,
            booted_at: Instant::now(),
        };
        dev.boot().await;
        dev
    }

    /// The device id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The serial bridge, for a UART device.
    pub fn bridge(&self) -> Option<&SerialBridge> {
        match &self.link {
            Link::Uart(b) => Some(b),
            Link::Eth { .. } => None,
        }
    }

    /// The serial bridge; panics for an Ethernet device.
    pub fn uart_bridge(&self) -> &SerialBridge {
        self.bridge()
            .unwrap_or_else(|| panic!("{} is an Ethernet device: no serial bridge", self.id))
    }

    /// Writes raw bytes onto the device's link in `dir`, through its serial bridge or its
    /// TCP proxy; panics if it has neither.
    pub async fn inject(&self, dir: Direction, bytes: &[u8]) -> std::io::Result<()> {
        match &self.link {
            Link::Uart(bridge) => bridge.inject(dir, bytes).await,
            Link::Eth {
                proxy: Some(proxy), ..
            } => proxy.inject(dir, bytes).await,
            Link::Eth { proxy: None, .. } => {
                panic!("{} has no TCP proxy: boot it with eth_via_proxy", self.id)
            }
        }
    }

    /// Byte counts of the bridge or proxy, if the device has one.
    pub fn wire_stats(&self) -> Option<&BridgeStats> {
        match &self.link {
            Link::Uart(bridge) => Some(bridge.stats()),
            Link::Eth { proxy, .. } => proxy.as_ref().map(TcpProxy::stats),
        }
    }

    /// Is QEMU running?
    pub fn is_running(&mut self) -> bool {
        self.qemu
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Panics with the device log unless QEMU is running.
    pub fn assert_running(&mut self) {
        if !self.is_running() {
            panic!(
                "QEMU for {} is not running; its log ends:\n{}",
                self.id,
                tail(&self.log_text(), LOG_TAIL_LINES)
            );
        }
    }

    /// Starts QEMU (again): a power-on. For a UART device, waits until QEMU has connected
    /// its serial socket, which it does before the firmware's first instruction.
    pub async fn boot(&mut self) {
        assert!(self.qemu.is_none(), "{} is already running", self.id);
        self.boots += 1;
        let args = self.qemu_args();
        let connections = self
            .bridge()
            .map(|b| b.stats().connections.load(Ordering::Relaxed));
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("creating {}: {e}", self.log.display()));
        let _ = writeln!(
            log,
            "===== boot {}: {} {}",
            self.boots,
            qemu_program(),
            args.join(" ")
        );
        let mut cmd = Command::new(qemu_program());
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "starting {} for {}: {e} (install it: apt-get install qemu-system-arm, \
                 or run `cargo xtask ci`)",
                qemu_program(),
                self.id
            )
        });
        let stdout = child.stdout.take().expect("QEMU's stdout is piped");
        let raw = self
            .dir
            .join(format!("qemu-{}-{}.defmt", self.id, self.boots));
        self.decoder = Some(
            spawn_decoder(stdout, self.firmware.table.as_ref(), &raw, &self.log)
                .unwrap_or_else(|e| panic!("{}: starting the defmt decoder: {e}", self.id)),
        );
        self.qemu = Some(child);
        self.booted_at = Instant::now();
        if let Some(before) = connections {
            self.wait_uart_connected(before).await;
        }
    }

    async fn wait_uart_connected(&mut self, before: u64) {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        while self
            .bridge()
            .is_some_and(|b| b.stats().connections.load(Ordering::Relaxed) == before)
        {
            self.assert_running();
            if Instant::now() > deadline {
                panic!(
                    "QEMU for {} did not connect its UART within {BOOT_TIMEOUT:?}; log:\n{}",
                    self.id,
                    tail(&self.log_text(), LOG_TAIL_LINES)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Kills QEMU (SIGKILL): the board loses power mid-whatever. Over Ethernet the
    /// gateway sees the TCP connection close; over UART the serial port stays open.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.qemu.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(decoder) = self.decoder.take() {
            // QEMU is gone, so its stdout is at EOF and the thread ends promptly.
            let _ = tokio::task::spawn_blocking(move || decoder.join()).await;
        }
    }

    /// Power off a board on a USB serial adapter: QEMU killed and, for a UART device, the
    /// adapter unplugged, so the gateway sees the port go (an Ethernet device's TCP
    /// connection dies with QEMU anyway).
    pub async fn power_off(&mut self) {
        self.kill().await;
        if let Some(bridge) = self.bridge() {
            bridge.unplug().await;
        }
    }

    /// Power on after [`QemuDevice::power_off`]: the adapter plugged back in, QEMU booted.
    pub async fn power_on(&mut self) {
        if let Some(bridge) = self.bridge() {
            bridge
                .plug()
                .await
                .unwrap_or_else(|e| panic!("{}: replugging the serial bridge: {e}", self.id));
        }
        self.boot().await;
    }

    /// A reset: QEMU killed and booted again with the same link.
    pub async fn reset(&mut self) {
        self.kill().await;
        self.boot().await;
    }

    /// Time since the last boot.
    pub fn uptime(&self) -> Duration {
        self.booted_at.elapsed()
    }

    /// The QEMU command line's arguments for this device.
    pub fn qemu_args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "-machine",
            "mps2-an385",
            "-cpu",
            "cortex-m3",
            "-display",
            "none",
            "-monitor",
            "none",
            "-semihosting-config",
            "enable=on,target=native",
            "-kernel",
            path_str(&self.firmware.elf),
        ]
        .map(str::to_owned)
        .into();
        let mut append = format!("id={}", self.id);
        match &self.link {
            Link::Uart(bridge) => {
                args.extend(["-serial".to_owned(), bridge.qemu_serial_arg()]);
                // No network: QEMU then warns that the board's LAN9118 "has no peer".
                args.extend(["-nic".to_owned(), "none".to_owned()]);
            }
            Link::Eth { gateway, proxy } => {
                let port = proxy.as_ref().map_or(gateway.port(), |p| p.addr().port());
                // UART0 to nowhere: QEMU's default would be a console on stdout, where
                // the defmt bytes go.
                args.extend(["-serial".to_owned(), "null".to_owned()]);
                args.extend(["-nic".to_owned(), "user,model=lan9118".to_owned()]);
                append.push_str(&format!(" port={port}"));
            }
        }
        args.extend(["-append".to_owned(), append]);
        args
    }

    /// Everything logged so far: QEMU's stderr and the decoded defmt lines, all boots.
    pub fn log_text(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for QemuDevice {
    fn drop(&mut self) {
        if let Some(mut child) = self.qemu.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(decoder) = self.decoder.take() {
            let _ = decoder.join();
        }
        if std::thread::panicking() {
            eprintln!(
                "\n===== QEMU device {} ({}, last {LOG_TAIL_LINES} lines) =====\n{}",
                self.id,
                self.firmware.elf.display(),
                tail(&self.log_text(), LOG_TAIL_LINES)
            );
        }
    }
}
