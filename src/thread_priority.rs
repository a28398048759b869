//! Background work that must not compete with serving: a thread that builds a snapshot
//! lowers its own CPU priority, so that while it encodes megabytes the threads answering
//! clients and replicating the log get the cores first. Linux applies a nice value to the
//! one thread named by its id.

/// The nice value of background threads (0 is the default, 19 the lowest priority).
const BACKGROUND_NICE: libc::c_int = 10;

/// Lower the calling thread's CPU priority to `BACKGROUND_NICE`, or leave it where it is if
/// it is already lower (a process started with `nice 15` is not raised). Best effort: a
/// refusal leaves it as it was.
pub fn lower_this_thread() {
    // SAFETY: gettid(2), getpriority(2) and setpriority(2) on the calling thread; errno is
    // cleared first because -1 is also a valid priority.
    let rc = unsafe {
        let tid = libc::gettid() as libc::id_t;
        *libc::__errno_location() = 0;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        if now == -1 && *libc::__errno_location() != 0 {
            -1
        } else {
            libc::setpriority(libc::PRIO_PROCESS, tid, now.max(BACKGROUND_NICE))
        }
    };
    if rc != 0 {
        tracing::debug!(
            "could not lower a background thread's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn this_threads_nice() -> libc::c_int {
        // SAFETY: getpriority(2) on the calling thread.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[test]
    fn a_thread_goes_down_to_the_background_nice_and_never_up() {
        let lowered = std::thread::spawn(|| {
            let before = this_threads_nice();
            lower_this_thread();
            (before, this_threads_nice())
        })
        .join()
        .expect("thread");
        assert_eq!(lowered.1, lowered.0.max(BACKGROUND_NICE));
        let kept = std::thread::spawn(|| {
            // SAFETY: setpriority(2) on the calling thread; lowering needs no privilege.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 15) };
            lower_this_thread();
            this_threads_nice()
        })
        .join()
        .expect("thread");
        assert_eq!(
            kept, 15,
            "a thread already below the background priority stays there"
        );
    }
}
