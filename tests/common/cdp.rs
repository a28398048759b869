//! A headless Chromium driven over the Chrome DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: JSON messages ended by NUL, commands on fd 3, replies on
//! fd 4), so the dashboard test needs no WebSocket client. Only what the test uses: open a
//! page, evaluate JavaScript in it.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Chromium is: `DISPATCHER_CHROMIUM`, else the usual names on the PATH.
pub fn find_chromium() -> anyhow::Result<String> {
    if let Ok(path) = std::env::var("DISPATCHER_CHROMIUM") {
        return Ok(path);
    }
    for name in [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {name}"))
            .output()?;
        if found.status.success() {
            return Ok(String::from_utf8_lossy(&found.stdout).trim().to_string());
        }
    }
    anyhow::bail!(
        "no Chromium found for the dashboard test: install it (`apt-get install chromium`, as \
         .ci/run does) or set DISPATCHER_CHROMIUM to its path"
    )
}

pub struct Browser {
    child: Child,
    commands: std::fs::File,
    replies: BufReader<std::fs::File>,
    next_id: u64,
    session: String,
}

fn pipe() -> anyhow::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    anyhow::ensure!(rc == 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl Browser {
    /// Start headless Chromium on `url` and attach to its page.
    pub fn open(url: &str, profile_dir: &std::path::Path) -> anyhow::Result<Self> {
        let binary = find_chromium()?;
        let (cmd_read, cmd_write) = pipe()?;
        let (reply_read, reply_write) = pipe()?;
        let (child_in, child_out) = (cmd_read.as_raw_fd(), reply_write.as_raw_fd());
        let mut command = Command::new(binary);
        command
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--window-size=1280,900",
                // The test clusters' own CA is not the system's.
                "--ignore-certificate-errors",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile_dir.display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that the test can stop it with its helpers.
            .process_group(0);
        // SAFETY: only async-signal-safe dup2 calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(child_in, 3) < 0 || libc::dup2(child_out, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn()?;
        drop(cmd_read);
        drop(reply_write);
        let mut browser = Browser {
            child,
            commands: std::fs::File::from(cmd_write),
            replies: BufReader::new(std::fs::File::from(reply_read)),
            next_id: 0,
            session: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let page = loop {
            let targets = browser.call(None, "Target.getTargets", json!({}))?;
            let page = targets["targetInfos"]
                .as_array()
                .and_then(|all| all.iter().find(|t| t["type"] == "page"))
                .and_then(|t| t["targetId"].as_str())
                .map(str::to_string);
            if let Some(page) = page {
                break page;
            }
            anyhow::ensure!(Instant::now() < deadline, "Chromium opened no page");
            std::thread::sleep(Duration::from_millis(100));
        };
        let attached = browser.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": page, "flatten": true}),
        )?;
        browser.session = attached["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no session in {attached}"))?
            .to_string();
        Ok(browser)
    }

    /// Send one command (to the page's session, if given) and wait for its reply.
    fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.commands.write_all(message.to_string().as_bytes())?;
        self.commands.write_all(b"\0")?;
        self.commands.flush()?;
        loop {
            let mut raw = Vec::new();
            let n = self.replies.read_until(0, &mut raw)?;
            anyhow::ensure!(n > 0, "Chromium closed its DevTools pipe");
            raw.pop();
            let reply: Value = serde_json::from_slice(&raw)?;
            // Events and other replies are not ours.
            if reply["id"] != json!(id) {
                continue;
            }
            if let Some(error) = reply.get("error") {
                anyhow::bail!("{method}: {error}");
            }
            return Ok(reply["result"].clone());
        }
    }

    /// Evaluate `expression` in the page; its value as JSON.
    pub fn eval(&mut self, expression: &str) -> anyhow::Result<Value> {
        let session = self.session.clone();
        let result = self.call(
            Some(&session),
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        )?;
        if let Some(thrown) = result.get("exceptionDetails") {
            anyhow::bail!("{expression}: {thrown}");
        }
        Ok(result["result"]["value"].clone())
    }

    /// With `DISPATCHER_SCREENSHOTS=<dir>`, save the page as `<dir>/<name>.png` (how the
    /// console's pictures in docs/ are made); otherwise nothing.
    pub fn screenshot(&mut self, name: &str) -> anyhow::Result<()> {
        use base64::Engine;
        let Some(dir) = std::env::var_os("DISPATCHER_SCREENSHOTS") else {
            return Ok(());
        };
        let session = self.session.clone();
        let shot = self.call(
            Some(&session),
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        )?;
        let data = shot["data"].as_str().unwrap_or_default();
        let png = base64::engine::general_purpose::STANDARD.decode(data)?;
        std::fs::write(std::path::Path::new(&dir).join(format!("{name}.png")), png)?;
        Ok(())
    }

    /// Evaluate `expression` until it is true, or fail after `within` naming `what`.
    pub fn wait_until(
        &mut self,
        what: &str,
        expression: &str,
        within: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        // Before the page has loaded, what it names does not exist yet: not yet true.
        let guarded = format!(
            "(() => {{ try {{ return ({expression}); }} catch (e) {{ return false; }} }})()"
        );
        loop {
            if self.eval(&guarded)? == json!(true) {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "the page never showed {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group this test started: the browser and its helper processes.
        // SAFETY: kill(2) on the process group of a child this test spawned.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}
