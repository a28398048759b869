//! Background work that must not compete with serving: a thread that builds a snapshot
//! lowers its own CPU priority, so that while it encodes megabytes the threads answering
//! clients and replicating the log get the cores first. Linux applies a nice value to the
//! one thread named by its id.

/// The nice value of background threads (0 is the default, 19 the lowest priority).
const BACKGROUND_NICE: libc::c_int = 10;

/// Lower the calling thread's CPU priority. Best effort: a refusal leaves it as it was.
pub fn lower_this_thread() {
    // SAFETY: gettid(2) and setpriority(2) on the calling thread; no memory is involved.
    let rc = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, BACKGROUND_NICE)
    };
    if rc != 0 {
        tracing::debug!(
            "could not lower a background thread's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}
