//! Measuring a benchmark's sides alike: child processes' wall time and peak RSS, CPU seconds,
//! medians.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};


/// Wall time and peak resident memory of one child process.
pub(super) struct Measured {
    pub(super) seconds: f64,
    pub(super) max_rss_mb: f64,
    pub(super) stdout: String,
}

/// Where a measured child writes its own peak RSS (see `write_peak_rss`).
pub(super) const PEAK_RSS_FILE: &str = "PINPIPE_PEAK_RSS_FILE";

/// Writes this process's peak RSS (VmHWM, kB) to `$PINPIPE_PEAK_RSS_FILE` when it is set.
/// `wait4`'s ru_maxrss cannot be used alone: Linux folds the parent's high-water mark into a
/// vfork+exec'd child's, so a child of a big bench process would report the parent's memory.
pub fn write_peak_rss() {
    if let Some(path) = std::env::var_os(PEAK_RSS_FILE) {
        if let Some(kb) = peak_rss_kb() {
            let _ = std::fs::write(path, kb.to_string());
        }
    }
}

pub(super) fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub(super) fn measure(cmd: &mut Command) -> Result<Measured> {
    let out_path = std::env::temp_dir().join(format!("pinpipe-bench-{}.out", std::process::id()));
    let rss_path = std::env::temp_dir().join(format!("pinpipe-bench-{}.rss", std::process::id()));
    let _ = std::fs::remove_file(&rss_path);
    let out_file = std::fs::File::create(&out_path)?;
    let started = Instant::now();
    let child = cmd.stdout(out_file).env(PEAK_RSS_FILE, &rss_path).spawn().with_context(|| format!("starting {cmd:?}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: plain syscall on our own child; rusage is fully written by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let seconds = started.elapsed().as_secs_f64();
    if r < 0 {
        bail!("waiting for {cmd:?}: {}", std::io::Error::last_os_error());
    }
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!("{cmd:?} failed (status {status}); output:\n{stdout}");
    }
    // The child's own figure; wait4's (an upper bound, see `write_peak_rss`) only if it wrote none.
    let own_kb = std::fs::read_to_string(&rss_path).ok().and_then(|s| s.trim().parse::<f64>().ok());
    let _ = std::fs::remove_file(&rss_path);
    let max_rss_mb = own_kb.unwrap_or(usage.ru_maxrss as f64) / 1024.0;
    Ok(Measured { seconds, max_rss_mb, stdout })
}

pub(super) fn same_files(a: &Path, b: &Path, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .filter(|n| {
            let f = format!("{n}.csv");
            std::fs::read(a.join(&f)).ok() != std::fs::read(b.join(&f)).ok()
        })
        .map(|n| n.to_string())
        .collect()
}

pub(super) fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// User + system CPU time of this whole process so far.
pub fn cpu_seconds() -> f64 {
    // SAFETY: plain syscall; rusage is fully written by the kernel.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// User + system CPU time of a running child, from /proc (it has not been reaped yet).
pub(super) fn proc_cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return f64::NAN };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th of them.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let ticks: Vec<f64> = rest.split_whitespace().skip(11).take(2).filter_map(|f| f.parse().ok()).collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks.iter().sum::<f64>() / hz
}

pub(super) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
