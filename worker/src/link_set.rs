//! The worker's set of gateway links: one link task per gateway address, for the static
//! `gateways` list and for every gateway discovery finds, picked up and dropped while the
//! worker runs (no restart).
//!
//! Static gateways are linked for the worker's whole life. A discovered gateway whose
//! record disappears is retired: its link task ends the next time it is not linked (a link
//! that is up stays up). A failed lookup changes nothing, so losing discovery for a while
//! unlinks nobody. What a link does is `link.rs`'s; reading the records is `discovery.rs`'s.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use protocol::discovery::LOOKUP_EVERY_MS;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::WorkerConfig;
use crate::discovery::Discovery;
use crate::gateway_api::Gateway;
use crate::link::{run_link, Delivery, LinkParams, Stop};

/// One link task.
struct LinkTask {
    task: JoinHandle<()>,
    retire: Arc<AtomicBool>,
    /// From the static list: never retired.
    fixed: bool,
}

/// The running link tasks, by address.
struct LinkSet {
    secret: String,
    name: String,
    gateway: Gateway,
    events: mpsc::WeakSender<Delivery>,
    stop: Stop,
    tasks: HashMap<String, LinkTask>,
}

impl LinkSet {
    /// Makes sure a link task runs for `addr` (again, if an earlier one ended).
    fn ensure(&mut self, addr: &str, fixed: bool) {
        if let Some(task) = self.tasks.get(addr) {
            if !task.task.is_finished() {
                // Back in the records after a flicker: it must not retire after all.
                task.retire.store(false, Ordering::Relaxed);
                return;
            }
        }
        if !fixed {
            tracing::info!(addr = %addr, "gateway found by discovery; linking");
        }
        let params = LinkParams {
            addr: addr.to_owned(),
            secret: self.secret.clone(),
            name: self.name.clone(),
        };
        let retire = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(run_link(
            params,
            self.gateway.clone(),
            self.events.clone(),
            self.stop.clone(),
            retire.clone(),
        ));
        self.tasks.insert(
            addr.to_owned(),
            LinkTask {
                task,
                retire,
                fixed,
            },
        );
    }

    /// Retires every discovered link not in `wanted`, and forgets tasks that ended.
    fn keep_only(&mut self, wanted: &BTreeSet<&str>) {
        self.tasks.retain(|addr, task| {
            if task.fixed || wanted.contains(addr.as_str()) {
                return true;
            }
            if !task.retire.swap(true, Ordering::Relaxed) {
                tracing::info!(addr = %addr, "gateway left the discovery records; unlinking once its link is down");
            }
            !task.task.is_finished()
        });
    }

    /// Waits for every link task (they end once the worker leaves and closes).
    async fn join(self) {
        for (_, task) in self.tasks {
            let _ = task.task.await;
        }
    }
}

/// Runs the worker's links until it leaves and every link task has ended.
pub(crate) async fn run(
    config: WorkerConfig,
    gateway: Gateway,
    events: mpsc::WeakSender<Delivery>,
    stop: Stop,
) {
    let mut set = LinkSet {
        secret: config.secret.clone(),
        name: config.name.clone(),
        gateway,
        events,
        stop: stop.clone(),
        tasks: HashMap::new(),
    };
    for addr in &config.gateways {
        set.ensure(addr, true);
    }
    if !config.discovery.is_empty() {
        let mut discovery = Discovery::new(&config.discovery, &config.discovery_prefix);
        let mut failing = false;
        let mut tick = tokio::time::interval(Duration::from_millis(LOOKUP_EVERY_MS));
        loop {
            tokio::select! {
                _ = stop.leave.cancelled() => break,
                _ = tick.tick() => {}
            }
            let lookup = tokio::task::spawn_blocking(move || {
                let found = discovery.lookup();
                (discovery, found)
            });
            let found = match lookup.await {
                Ok((back, found)) => {
                    discovery = back;
                    found
                }
                Err(join) => {
                    tracing::error!(cause = %join, "discovery lookup panicked; starting over");
                    discovery = Discovery::new(&config.discovery, &config.discovery_prefix);
                    continue;
                }
            };
            match found {
                Ok(found) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!("discovery answers again");
                    }
                    let wanted: BTreeSet<&str> = found.values().map(String::as_str).collect();
                    // A gateway already linked from another address (listed statically under
                    // another name, or announced anew while its old link is up) gets no
                    // second link: two links for one gateway id would fight over its table.
                    let linked = set.gateway.linked_gateways();
                    for (id, addr) in &found {
                        if linked.contains(id) && !set.tasks.contains_key(addr.as_str()) {
                            continue;
                        }
                        set.ensure(addr, false);
                    }
                    set.keep_only(&wanted);
                }
                Err(err) if !failing => {
                    failing = true;
                    tracing::warn!(cause = %err, "discovery lookup failed; keeping the gateways we have");
                }
                Err(err) => tracing::debug!(cause = %err, "discovery lookup failed"),
            }
        }
    }
    stop.leave.cancelled().await;
    set.join().await;
}
