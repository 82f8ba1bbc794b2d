//! Process-level settings that make CPU inference fast.
//!
//! candle allocates a fresh buffer for every tensor op. With glibc's default malloc, buffers
//! above the (dynamic, at most 32 MB) mmap threshold are mapped and unmapped on every op and
//! the heap top is trimmed after each large free, so the kernel zero-fills the same pages again
//! and again: on full-size ECAPA (10 s, batch 8) page faults and `munmap` took ~20% of the time.
//! [`tune_allocator`] keeps freed memory in the process instead. Peak RSS is unchanged (the
//! same buffers are reused); what changes is that memory freed after a peak is kept for the
//! next call rather than returned to the system.

use std::sync::OnceLock;

static APPLIED: OnceLock<bool> = OnceLock::new();

/// Tunes glibc's malloc for tensor workloads (no mmap for large blocks, no heap trimming below
/// 2 GiB of free top memory). Called by every `from_hparams`; idempotent; a no-op on platforms
/// other than Linux/glibc, and when the environment variable `VOXBRAIN_TUNE_MALLOC=0` is set.
/// Returns whether the settings were applied (by this or an earlier call).
///
/// ```
/// // Safe to call any number of times, before or after loading models.
/// let applied = voxbrain::runtime::tune_allocator();
/// assert_eq!(applied, voxbrain::runtime::tune_allocator());
/// ```
pub fn tune_allocator() -> bool {
    *APPLIED.get_or_init(|| {
        if std::env::var("VOXBRAIN_TUNE_MALLOC").is_ok_and(|v| v == "0") {
            return false;
        }
        let ok = apply();
        tracing::debug!(applied = ok, "malloc tuned for tensor workloads");
        ok
    })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> bool {
    // SAFETY: mallopt only changes allocator parameters; it is thread-safe in glibc.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> bool {
    false
}

#[cfg(test)]
mod tests {
    /// On Linux/glibc both mallopt calls must be accepted (unless the user opted out).
    #[test]
    fn mallopt_settings_are_applied_on_glibc() {
        let opted_out = std::env::var("VOXBRAIN_TUNE_MALLOC").is_ok_and(|v| v == "0");
        let applied = super::tune_allocator();
        if cfg!(all(target_os = "linux", target_env = "gnu")) && !opted_out {
            assert!(applied, "mallopt rejected the settings");
        } else {
            assert!(!applied);
        }
        assert_eq!(applied, super::tune_allocator(), "idempotent");
    }
}
