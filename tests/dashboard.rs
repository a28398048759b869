//! The dashboard in a real browser: headless Chromium opens a replica's `/`, a job is
//! submitted from outside, and the page shows it running and then finished without being
//! reloaded (the server-sent events feed it).

mod common;

use common::cdp::Browser;
use common::http_client::{get, HttpTarget};
use common::*;
use dispatcher::local_cluster::wait_for;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_a_job_live_without_a_reload() -> anyhow::Result<()> {
    let mut config = test_config();
    // A sample a second, so that the charts have points within the test.
    config.dashboard.history_sample_secs = 1;
    let mut cluster = start_cluster(3, config).await?;
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
        // A filter narrows the list and goes into the page's URL (a link to share).
        browser.eval(
            "document.getElementById('filter-state').value = 'running'; \
             document.getElementById('filter').dispatchEvent(new Event('input'))",
        )?;
        browser.wait_until(
            "the finished job filtered out, the filter in the URL",
            &format!("{row} === null && location.search === '?state=running'"),
            within,
        )?;
        browser.eval(
            "document.getElementById('filter-state').value = ''; \
             document.getElementById('filter-name').value = 'SHOWN'; \
             document.getElementById('filter').dispatchEvent(new Event('input'))",
        )?;
        browser.wait_until(
            "the job back, found by a piece of its name",
            &format!("{row} !== null && location.search === '?name=SHOWN'"),
            within,
        )?;
        let tenant = browser.eval(&format!("{row}.children[2].textContent"))?;
        let priority = browser.eval(&format!("{row}.children[3].textContent"))?;
        assert_eq!(
            (tenant, priority),
            (serde_json::json!("default"), serde_json::json!("500"))
        );
        assert_eq!(
            browser.eval("window.__loadedOnce")?,
            serde_json::json!("yes"),
            "the page was reloaded"
        );
        Ok(())
    })?;

    log_phase("the history charts show the submission and the shards' starts");
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        let chart = |id: &str| format!("document.querySelector('#chart-{id} polyline')");
        browser.wait_until(
            "the charts to have points, the submission among them",
            &format!(
                "{submitted}?.dataset.points >= 3 && {starts}?.dataset.points >= 3 && \
                 {submitted}.getAttribute('points').split(' ').some((xy) => +xy.split(',')[1] < 86)",
                submitted = chart("submitted"),
                starts = chart("shards"),
            ),
            within,
        )?;
        browser.screenshot("console-overview")?;
        let caption = browser.eval("document.getElementById('historyspan').textContent")?;
        assert!(
            caption.as_str().unwrap_or_default().contains("every 1 s"),
            "{caption}"
        );
        Ok(())
    })?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_page_opened_by_its_link_on_a_follower_follows_the_job_to_its_end(
) -> anyhow::Result<()> {
    let mut cluster = start_cluster(3, test_config()).await?;
    cluster.start_taskmanager("web-b", 2, &[])?;
    let client = cluster.client()?;
    wait_taskmanagers_alive(&client, 1).await?;
    let follower = {
        let leader = cluster.wait_for_leader(&cluster.ids(), DEADLINE).await?;
        cluster.ids().into_iter().find(|id| *id != leader).unwrap()
    };
    // Waits for a file the test writes, so the page is surely open while the job runs.
    let gate = cluster.root().join("gate");
    let script = format!(
        "echo \"shard $DISPATCHER_SHARD_INDEX started\"; \
         while [ ! -e {} ]; do sleep 0.1; done; echo \"shard $DISPATCHER_SHARD_INDEX done\"",
        gate.display()
    );
    let job = client
        .submit(job_request(
            "paged",
            2,
            1,
            1,
            ("/bin/sh".to_string(), vec!["-c".to_string(), script]),
        ))
        .await?
        .job_id;
    wait_all_running(&client, &job).await?;

    log_phase("the job's own URL, on a follower, shows it running");
    let url = format!("http://{}/jobs/{job}", cluster.replica(follower)?.http);
    let profile = tempfile::tempdir()?;
    let mut browser = tokio::task::block_in_place(|| Browser::open(&url, profile.path()))?;
    let within = Duration::from_secs(30);
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        browser.wait_until(
            "the job running, with both shards and their TaskManager",
            "document.getElementById('job-state').dataset.state === 'running' && \
             document.querySelectorAll('#shards tr[data-state=\"running\"]').length === 2 && \
             document.querySelector('#shards tr').children[2].textContent === 'web-b'",
            within,
        )?;
        // Live: what the running shard printed so far, before it can end.
        browser.wait_until(
            "shard 0's first line, live",
            "document.getElementById('output-note').textContent === 'live' && \
             document.getElementById('output-stdout').textContent === 'shard 0 started\\n'",
            within,
        )?;
        browser.eval("window.__loadedOnce = 'yes'")?;
        Ok(())
    })?;

    log_phase(
        "its TaskManager's page lists both shards and its pin; the tenants page, the quota held",
    );
    client.set_quota("default", Some(10), false, None).await?;
    client
        .pin_taskmanager_with(
            "web-b",
            [("zone".to_string(), "a".to_string())].into(),
            Some(2),
            dispatcher::domain::ResourcePin {
                cpu_millis: None,
                memory_bytes: None,
                named: [("gpu".to_string(), 1)].into(),
            },
        )
        .await?;
    let http = cluster.replica(follower)?.http.clone();
    // The page reloads on shard and TaskManager events, not on a pin: open it once the
    // follower has applied the pin.
    wait_for(DEADLINE, "the follower to apply the pin", || async {
        let page = get(&HttpTarget::Plain, &http, "/api/taskmanagers/web-b", &[]).await;
        page.ok()?.body.contains("\"pinned_slots\":2").then_some(())
    })
    .await?;
    let (tm_profile, tenants_profile) = (tempfile::tempdir()?, tempfile::tempdir()?);
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        let mut tm_page = Browser::open(
            &format!("http://{http}/taskmanagers/web-b"),
            tm_profile.path(),
        )?;
        tm_page.wait_until(
            "both shards on web-b, two of its two slots used, its pin beside them",
            &format!(
                "document.querySelectorAll('#shards tr[data-job=\"{job}\"]').length === 2 && \
                 document.querySelector('tr[data-resource=\"slots\"]').children[1].textContent === '2' && \
                 document.querySelector('tr[data-resource=\"slots\"]').children[3].textContent === '2' && \
                 document.querySelector('tr[data-resource=\"gpu\"]').children[3].textContent === '1' && \
                 document.getElementById('facts').textContent.includes('zone=a') && \
                 document.getElementById('tm-state').dataset.state === 'alive'"
            ),
            within,
        )?;
        tm_page.screenshot("console-taskmanager")?;
        let mut tenants_page =
            Browser::open(&format!("http://{http}/tenants"), tenants_profile.path())?;
        tenants_page.wait_until(
            "tenant default: a quota of 10 slots, 2 held",
            "document.querySelector('tr[data-tenant=\"default\"]').children[1].textContent === '10' && \
             document.querySelector('tr[data-tenant=\"default\"]').children[2].textContent === '2'",
            within,
        )?;
        tenants_page.screenshot("console-tenants")?;
        Ok(())
    })?;

    log_phase("it finishes, and the page shows the end and the output without a reload");
    std::fs::write(&gate, b"")?;
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        browser.wait_until(
            "the job finished with shard 0's output",
            "document.getElementById('job-state').dataset.state === 'finished' && \
             document.getElementById('output-stdout').textContent === \
             'shard 0 started\\nshard 0 done\\n'",
            within,
        )?;
        assert_eq!(
            browser.eval("window.__loadedOnce")?,
            serde_json::json!("yes")
        );
        browser.screenshot("console-job")?;
        browser.eval(
            "document.getElementById('output-shard').value = '1'; \
             document.getElementById('output-shard').dispatchEvent(new Event('change'))",
        )?;
        let shown = browser.eval("document.getElementById('output-stdout').textContent")?;
        assert_eq!(shown, serde_json::json!("shard 1 started\nshard 1 done\n"));
        Ok(())
    })?;

    log_phase("a job that does not exist says so");
    let http = cluster.replica(follower)?.http.clone();
    let missing = get(&HttpTarget::Plain, &http, "/api/jobs/j-999999", &[]).await?;
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert!(missing.body.contains("not found"), "{}", missing.body);
    let page = get(&HttpTarget::Plain, &http, "/jobs/j-999999", &[]).await?;
    assert_eq!(page.status, 200, "the page itself is static");
    let policy = page.header("content-security-policy").unwrap_or_default();
    assert_eq!(policy, "default-src 'self'; frame-ancestors 'none'");

    log_phase("a running job is cancelled from its page, after a confirmation");
    let long = client
        .submit(job_request(
            "cancelled-from-page",
            1,
            1,
            1,
            ("/bin/sleep".to_string(), vec!["600".to_string()]),
        ))
        .await?
        .job_id;
    wait_all_running(&client, &long).await?;
    let profile = tempfile::tempdir()?;
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        let mut page = Browser::open(&format!("http://{http}/jobs/{long}"), profile.path())?;
        page.wait_until(
            "the job running, with its cancel button",
            "document.getElementById('job-state').dataset.state === 'running' && \
             document.querySelector('button[data-change$=\"/cancel\"]') !== null",
            within,
        )?;
        page.eval("document.querySelector('button[data-change$=\"/cancel\"]').click()")?;
        page.eval("document.getElementById('confirm-yes').click()")?;
        page.wait_until(
            "the job cancelled",
            "document.getElementById('action-result').dataset.ok === 'yes' && \
             document.getElementById('job-state').dataset.state === 'cancelled'",
            within,
        )?;
        Ok(())
    })?;
    let refused = post(&http, &format!("/api/jobs/{long}/cancel")).await?;
    assert!(
        refused.starts_with("HTTP/1.1 403"),
        "a POST without the console's header: {refused}"
    );
    Ok(())
}

/// A bare POST (without the console's header), answered with its status line.
async fn post(addr: &str, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await?;
    Ok(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taskmanager_is_drained_from_its_page_with_an_operator_token_not_a_read_one(
) -> anyhow::Result<()> {
    use dispatcher::domain::Role;
    let mut cluster = start_secure_cluster(3, test_config()).await?;
    cluster.start_taskmanager("web-c", 2, &[])?;
    let admin = cluster.client()?;
    wait_taskmanagers_alive(&admin, 1).await?;
    let (_, viewer) = admin.create_token("viewer", Role::Read, None).await?;
    let (_, ops) = admin.create_token("ops", Role::Operator, None).await?;
    let follower = {
        let leader = cluster.wait_for_leader(&cluster.ids(), DEADLINE).await?;
        cluster.ids().into_iter().find(|id| *id != leader).unwrap()
    };
    let url = format!(
        "https://{}/taskmanagers/web-c",
        cluster.replica(follower)?.http
    );
    let profile = tempfile::tempdir()?;
    let within = Duration::from_secs(30);
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        let mut page = Browser::open(&url, profile.path())?;
        let sign_in = |page: &mut Browser, secret: &str| -> anyhow::Result<()> {
            // Asked for once the page's script has run (and been refused without a token),
            // or already past it.
            page.wait_until(
                "the page's script ready for a token",
                "document.getElementById('login').className === 'shown' || \
                 document.getElementById('tm-state').dataset.state !== undefined",
                within,
            )?;
            page.eval(&format!(
                "document.getElementById('token').value = {secret:?}; \
                 document.getElementById('login').requestSubmit()"
            ))?;
            page.wait_until(
                "the TaskManager shown",
                "document.getElementById('tm-state').dataset.state === 'alive'",
                within,
            )
        };
        let drain = |page: &mut Browser| -> anyhow::Result<()> {
            page.eval("document.querySelector('button[data-change$=\"/drain\"]').click()")?;
            page.eval("document.getElementById('confirm-yes').click()")?;
            Ok(())
        };

        log_phase("a read token sees the page, and its drain is refused");
        sign_in(&mut page, viewer.expose())?;
        drain(&mut page)?;
        page.wait_until(
            "the refusal",
            "document.getElementById('action-result').dataset.ok === 'no'",
            within,
        )?;
        let said = page.eval("document.getElementById('action-result').textContent")?;
        assert!(
            said.as_str().unwrap_or_default().contains("operator"),
            "{said}"
        );

        log_phase("an operator token drains it, and the page follows");
        sign_in(&mut page, ops.expose())?;
        drain(&mut page)?;
        page.wait_until(
            "the TaskManager draining",
            "document.getElementById('action-result').dataset.ok === 'yes' && \
             document.getElementById('tm-state').dataset.state === 'draining'",
            within,
        )?;
        Ok(())
    })?;
    let tms = admin.list_taskmanagers().await?;
    assert_eq!(tms[0].state, "draining");
    Ok(())
}
