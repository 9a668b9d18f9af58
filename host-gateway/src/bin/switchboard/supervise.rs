//! The foreground supervisor: starts the gateway, waits until it listens, starts the worker
//! and the demo device, keeps them running, and answers signals: SIGTERM/SIGINT stop
//! everything (workers first), SIGUSR1 (`switchboard reload`) replaces the workers.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{signal, SignalKind};

use crate::config::Config;
use crate::control::PidFile;
use crate::keeper::{unix_now, Keeper, ProcState, Spec};

/// Demo device binaries, best first: the firmware's std simulation (the same application
/// code as on the boards), then the test suite's simulated device. Both take `--id --tcp`.
const DEMO_DEVICES: &[&str] = &["switchboard-sim", "switchboard-device"];

/// How long the gateway has to start listening before `start` gives up.
const GATEWAY_READY_TIMEOUT: Duration = Duration::from_secs(15);

/// What the state file holds; `status` and `reload` read it.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct State {
    /// The supervisor's pid.
    pub pid: u32,
    /// Unix seconds when it started.
    pub started_at: u64,
    /// `true` once the gateway listens and the worker was started.
    pub ready: bool,
    /// Completed reloads.
    pub reloads: u32,
    /// The supervised processes.
    pub process: Vec<ProcState>,
}

/// Runs the supervisor until a stop signal.
pub fn run_foreground(config: &Config) -> Result<()> {
    std::fs::create_dir_all(&config.supervisor.run_dir).with_context(|| {
        format!(
            "creating run directory {}",
            config.supervisor.run_dir.display()
        )
    })?;
    let pid_file = PidFile::acquire(config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let result = runtime.block_on(supervise(config));
    drop(pid_file);
    result
}

async fn supervise(config: &Config) -> Result<()> {
    let bin = config.bin_dir()?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigusr1 = signal(SignalKind::user_defined1()).context("installing SIGUSR1 handler")?;

    let mut state = State {
        pid: std::process::id(),
        started_at: unix_now(),
        ..State::default()
    };
    let gateway = Keeper::spawn(Spec {
        name: "gateway",
        program: bin.join("switchboard-gateway"),
        args: config.child_args(),
    });
    if let Err(err) = wait_listening(config, &gateway).await {
        gateway.stop().await;
        return Err(err);
    }
    let worker = Keeper::spawn(Spec {
        name: "worker",
        program: bin.join("switchboard-worker"),
        args: config.child_args(),
    });
    let mut keepers = vec![gateway, worker];
    if config.supervisor.demo_device {
        match DEMO_DEVICES
            .iter()
            .map(|name| bin.join(name))
            .find(|p| p.exists())
        {
            Some(program) => keepers.push(Keeper::spawn(Spec {
                name: "device",
                program,
                args: vec![
                    "--id".into(),
                    "demo".into(),
                    "--tcp".into(),
                    config.gateway.device_listen.clone().into(),
                ],
            })),
            None => tracing::warn!(
                dir = %bin.display(),
                looked_for = ?DEMO_DEVICES,
                "demo device binary not found; starting without it"
            ),
        }
    }
    state.ready = true;
    tracing::info!(telnet = %config.telnet_addr(), "switchboard is up");

    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut written = String::new();
    loop {
        state.process = keepers.iter().map(|k| k.state.borrow().clone()).collect();
        write_state(config, &state, &mut written);
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sigusr1.recv() => {
                tracing::info!("reload: replacing workers");
                for k in keepers.iter().filter(|k| k.state.borrow().name == "worker") {
                    k.replace().await;
                }
                state.reloads += 1;
                tracing::info!(reloads = state.reloads, "reload done");
            }
            _ = tick.tick() => {}
        }
    }
    tracing::info!("stopping");
    // Workers and devices first, so the gateway sees them leave; the gateway last.
    for k in keepers.iter().rev() {
        k.stop().await;
    }
    state.ready = false;
    state.process = keepers.iter().map(|k| k.state.borrow().clone()).collect();
    write_state(config, &state, &mut written);
    tracing::info!("stopped");
    Ok(())
}

/// Waits until the gateway's telnet port accepts, or fails if the gateway keeps exiting.
async fn wait_listening(config: &Config, gateway: &Keeper) -> Result<()> {
    let addr = config.telnet_addr();
    let deadline = tokio::time::Instant::now() + GATEWAY_READY_TIMEOUT;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        let st = gateway.state.borrow().clone();
        if st.restarts > 0 {
            bail!(
                "the gateway exited before listening on {addr} ({}); see its log above",
                st.last_exit.unwrap_or_default()
            );
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the gateway did not listen on {addr} within {GATEWAY_READY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Rewrites the state file (atomically) when it differs from `written`, the last text written.
fn write_state(config: &Config, state: &State, written: &mut String) {
    let path = config.state_file();
    let tmp = path.with_extension("toml.tmp");
    let text = match toml::to_string(state) {
        Ok(t) => t,
        Err(err) => {
            tracing::error!(cause = %err, "cannot serialise state");
            return;
        }
    };
    if text == *written {
        return;
    }
    written.clone_from(&text);
    if let Err(err) = std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, &path)) {
        tracing::warn!(path = %path.display(), cause = %err, "cannot write state file");
    }
}

/// Reads the state file of a running supervisor.
pub fn read_state(config: &Config) -> Option<State> {
    let text = std::fs::read_to_string(config.state_file()).ok()?;
    toml::from_str(&text).ok()
}
