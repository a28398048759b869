//! The dashboard in a real browser: headless Chromium opens a replica's `/`, a job is
//! submitted from outside, and the page shows it running and then finished without being
//! reloaded (the server-sent events feed it).

mod common;

use common::cdp::Browser;
use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_a_job_live_without_a_reload() -> anyhow::Result<()> {
    let mut cluster = start_cluster(3, test_config()).await?;
    cluster.start_taskmanager("web-a", 4, &[])?;
    let client = cluster.client()?;
    wait_taskmanagers_alive(&client, 1).await?;
    let follower = {
        let leader = cluster.wait_for_leader(&cluster.ids(), DEADLINE).await?;
        cluster.ids().into_iter().find(|id| *id != leader).unwrap()
    };
    // A follower's page: it serves from its applied state like any replica.
    let url = format!("http://{}/", cluster.replica(follower)?.http);
    let profile = tempfile::tempdir()?;

    log_phase("the page loads and goes live");
    let mut browser = tokio::task::block_in_place(|| Browser::open(&url, profile.path()))?;
    let within = Duration::from_secs(30);
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        browser.wait_until(
            "the event stream connected",
            "document.getElementById('status').textContent === 'live'",
            within,
        )?;
        browser.wait_until(
            "three replicas and the TaskManager",
            "document.querySelectorAll('#members tr').length === 3 && \
             document.querySelector('tr[data-taskmanager=\"web-a\"]') !== null",
            within,
        )?;
        // Survives only if the page is never reloaded.
        browser.eval("window.__loadedOnce = 'yes'")?;
        Ok(())
    })?;

    log_phase("a job submitted elsewhere shows up, runs and finishes on the page");
    let job = client
        .submit(job_request(
            "shown-live",
            3,
            1,
            1,
            ("/bin/sleep".to_string(), vec!["1".to_string()]),
        ))
        .await?
        .job_id;
    let row = format!("document.querySelector('tr[data-job=\"{job}\"]')");
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        browser.wait_until(
            "the job running",
            &format!("{row}?.dataset.state === 'running'"),
            within,
        )?;
        browser.wait_until(
            "the job finished",
            &format!("{row}?.dataset.state === 'finished'"),
            within,
        )?;
        let cells = browser.eval(&format!("{row}.querySelectorAll('.cell.finished').length"))?;
        assert_eq!(cells, serde_json::json!(3), "every shard shown finished");
        let log = browser.eval("document.getElementById('log').textContent")?;
        let log = log.as_str().unwrap_or_default();
        assert!(
            log.contains("job_finished") && log.contains(&job),
            "the event log shows the job's end: {log}"
        );
        assert_eq!(
            browser.eval("window.__loadedOnce")?,
            serde_json::json!("yes"),
            "the page was reloaded"
        );
        Ok(())
    })?;
    Ok(())
}
