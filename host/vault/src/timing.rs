//! Tuning and profiling knobs.
//!
//! * `LIFEBOAT_VAULT_TIMING=1`: ship and restore print, on stderr, the seconds each
//!   stage spent, summed over the threads running it (wall time per thread, so a stage
//!   run by two workers in parallel can show more than the wall time, and time a thread
//!   waited for a CPU counts in the stage it was in).
//! * `LIFEBOAT_VAULT_WORKERS=N`: the number of ship and restore workers (default: one
//!   per core, plus one; one per core for a restore from a local folder; see
//!   [`workers`]).

use std::sync::Mutex;
use std::sync::OnceLock;
use std::time::Instant;

/// Ship and restore workers: `LIFEBOAT_VAULT_WORKERS`, or one per core (at most 8) plus
/// one, so that the cores stay busy while a worker waits for a read.
pub(crate) fn workers() -> usize {
    workers_or(cores() + 1)
}

/// `LIFEBOAT_VAULT_WORKERS`, or `default`.
pub(crate) fn workers_or(default: usize) -> usize {
    if let Some(n) = std::env::var("LIFEBOAT_VAULT_WORKERS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
    {
        return n.min(64);
    }
    default
}

/// Cores available (at most 8).
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8)
}

/// Whether `LIFEBOAT_VAULT_TIMING` asks for timings.
pub(crate) fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var("LIFEBOAT_VAULT_TIMING").is_ok_and(|v| !v.is_empty() && v != "0")
    })
}

/// Seconds per stage, collected from every thread of one run.
pub(crate) struct Timing {
    on: bool,
    what: &'static str,
    t0: Instant,
    stages: Mutex<Vec<(&'static str, f64)>>,
}

impl Timing {
    pub(crate) fn new(what: &'static str) -> Timing {
        Timing {
            on: enabled(),
            what,
            t0: Instant::now(),
            stages: Mutex::new(Vec::new()),
        }
    }

    /// A stopwatch for one thread; its laps are added here when it is dropped.
    pub(crate) fn watch(&self) -> Watch<'_> {
        Watch {
            timing: self,
            last: self.on.then(Instant::now),
            acc: Vec::new(),
        }
    }

    fn add(&self, acc: &[(&'static str, f64)]) {
        if let Ok(mut s) = self.stages.lock() {
            for &(name, secs) in acc {
                match s.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, t)) => *t += secs,
                    None => s.push((name, secs)),
                }
            }
        }
    }

    /// Prints the stages (when enabled).
    pub(crate) fn report(&self) {
        if !self.on {
            return;
        }
        let s = self.stages.lock().map(|s| s.clone()).unwrap_or_default();
        let parts: Vec<String> = s.iter().map(|(n, t)| format!("{n} {t:.3}")).collect();
        eprintln!(
            "lifeboat-vault timing: {} {:.3} s wall; thread-seconds: {}",
            self.what,
            self.t0.elapsed().as_secs_f64(),
            parts.join(", ")
        );
    }
}

/// A per-thread stopwatch: [`Watch::lap`] charges the time since the previous lap to a
/// stage. Costs nothing when timing is off.
pub(crate) struct Watch<'a> {
    timing: &'a Timing,
    last: Option<Instant>,
    acc: Vec<(&'static str, f64)>,
}

impl Watch<'_> {
    #[inline]
    pub(crate) fn lap(&mut self, stage: &'static str) {
        if let Some(last) = self.last {
            let now = Instant::now();
            let d = now.duration_since(last).as_secs_f64();
            self.last = Some(now);
            match self.acc.iter_mut().find(|(n, _)| *n == stage) {
                Some((_, t)) => *t += d,
                None => self.acc.push((stage, d)),
            }
        }
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        if self.last.is_some() {
            self.timing.add(&self.acc);
        }
    }
}
