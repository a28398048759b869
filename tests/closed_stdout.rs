//! A client command whose reader goes away (`dispatcher ... | head`) ends quietly, as Unix
//! tools do (SIGPIPE), instead of panicking with "failed printing to stdout".

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

const BINARY: &str = env!("CARGO_BIN_EXE_dispatcher");

#[test]
fn a_closed_stdout_ends_a_client_command_without_a_panic() {
    // The bash completions are more than a pipe's 64 KiB: the writer meets the closed pipe.
    let mut child = Command::new(BINARY)
        .args(["completions", "bash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).expect("some output");
    drop(stdout);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr read");
    let status = child.wait().expect("it ends");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "{status:?} {stderr}");
}
