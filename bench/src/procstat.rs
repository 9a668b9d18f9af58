//! CPU time and resident memory of the server processes under test, from /proc: what a
//! scenario charges to the server (all its processes together) for the work it asked.

use std::collections::BTreeMap;

use serde::Serialize;

/// A process to watch, by a label for the report (`gateway`, `worker`, `reference`).
#[derive(Debug, Clone)]
pub struct Watched {
    /// Label in the report.
    pub label: String,
    /// Its pid.
    pub pid: u32,
}

impl std::str::FromStr for Watched {
    type Err = String;

    /// `LABEL=PID`, or a bare pid labelled `server`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (label, pid) = s.split_once('=').unwrap_or(("server", s));
        let pid = pid
            .trim()
            .parse()
            .map_err(|e| format!("bad pid in {s:?}: {e}"))?;
        Ok(Watched {
            label: label.to_owned(),
            pid,
        })
    }
}

/// One reading of one process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reading {
    /// User plus system CPU time, all threads, in seconds.
    pub cpu_s: f64,
    /// Resident set size in KiB.
    pub rss_kib: u64,
}

/// Why a process could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read /proc/{pid}: {cause}")]
pub struct ProcError {
    pid: u32,
    cause: String,
}

/// Reads one process now.
pub fn read(pid: u32) -> Result<Reading, ProcError> {
    let fail = |cause: String| ProcError { pid, cause };
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| fail(e.to_string()))?;
    // The command name (field 2) may hold spaces: fields are counted after its ')'.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| fail("no ')' in stat".into()))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let ticks = |i: usize| -> Result<u64, ProcError> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| fail(format!("no field {} in stat", i + 3)))
    };
    let cpu_ticks = ticks(11)? + ticks(12)?;
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| fail(e.to_string()))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Ok(Reading {
        cpu_s: cpu_ticks as f64 / clock_ticks(),
        rss_kib,
    })
}

fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64)
}

/// Readings of every watched process at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot(BTreeMap<String, Reading>);

impl Snapshot {
    /// Reads every process; one that cannot be read is an error (it died: the run is void).
    pub fn take(watched: &[Watched]) -> Result<Snapshot, ProcError> {
        let mut map = BTreeMap::new();
        for w in watched {
            let reading = read(w.pid)?;
            let entry: &mut Reading = map.entry(w.label.clone()).or_default();
            entry.cpu_s += reading.cpu_s;
            entry.rss_kib += reading.rss_kib;
        }
        Ok(Snapshot(map))
    }

    /// CPU seconds of all processes.
    pub fn cpu_s(&self) -> f64 {
        self.0.values().map(|r| r.cpu_s).sum()
    }

    /// RSS of all processes, KiB.
    pub fn rss_kib(&self) -> u64 {
        self.0.values().map(|r| r.rss_kib).sum()
    }
}

/// What the server spent between two snapshots, per process and in all.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Usage {
    /// CPU seconds used, all processes.
    pub cpu_s: f64,
    /// RSS at the start, KiB, all processes.
    pub rss_kib_before: u64,
    /// RSS at the end, KiB, all processes.
    pub rss_kib_after: u64,
    /// The same per process label: (cpu_s, rss_kib_before, rss_kib_after).
    pub per_process: BTreeMap<String, (f64, u64, u64)>,
}

impl Usage {
    /// The difference `after - before`.
    pub fn between(before: &Snapshot, after: &Snapshot) -> Usage {
        let per_process = after
            .0
            .iter()
            .map(|(label, a)| {
                let b = before.0.get(label).copied().unwrap_or_default();
                (label.clone(), (a.cpu_s - b.cpu_s, b.rss_kib, a.rss_kib))
            })
            .collect();
        Usage {
            cpu_s: after.cpu_s() - before.cpu_s(),
            rss_kib_before: before.rss_kib(),
            rss_kib_after: after.rss_kib(),
            per_process,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = read(std::process::id()).expect("own /proc entry");
        assert!(me.rss_kib > 0);
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(50) {
            std::hint::black_box(0u64.wrapping_add(1));
        }
        let later = read(std::process::id()).expect("own /proc entry");
        assert!(later.cpu_s >= me.cpu_s);
    }

    #[test]
    fn watched_parses_labels() {
        let w: Watched = "gateway=42".parse().unwrap();
        assert_eq!((w.label.as_str(), w.pid), ("gateway", 42));
        let w: Watched = "7".parse().unwrap();
        assert_eq!((w.label.as_str(), w.pid), ("server", 7));
        assert!("x=y".parse::<Watched>().is_err());
    }
}
