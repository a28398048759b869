//! Crash points for fault-injection tests, compiled in only with the `failpoints` feature.
//! A point named in the `FAILPOINTS` environment variable (fail crate syntax, e.g.
//! `FAILPOINTS=log-after-flush=1%return`) aborts the process on the spot — like kill -9,
//! nothing is flushed or cleaned up. A delay point (`delay_point!`) only waits, to widen a
//! race for a test.

/// Abort the process here if the named failpoint fires.
#[macro_export]
macro_rules! crash_point {
    ($name:expr) => {{
        #[cfg(feature = "failpoints")]
        {
            if fail::eval($name, |_| ()).is_some() {
                eprintln!("failpoint {} fired: aborting", $name);
                std::process::abort();
            }
        }
    }};
}

/// Let the named failpoint act here without crashing: `sleep(<ms>)` widens a race so a test
/// can hit it every time (no-op without the feature).
#[macro_export]
macro_rules! delay_point {
    ($name:expr) => {{
        #[cfg(feature = "failpoints")]
        {
            let _ = fail::eval($name, |_| ());
        }
    }};
}

/// Read `FAILPOINTS` once at start-up (no-op without the feature).
pub fn setup() {
    #[cfg(feature = "failpoints")]
    {
        // The scenario stays configured for the life of the process.
        std::mem::forget(fail::FailScenario::setup());
    }
}
