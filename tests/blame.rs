//! Failures are attributed to the right party: a job whose command does not exist (or is not
//! executable, or its arguments are too long for exec) fails at once as the job's fault, without retries and without counting
//! against the TaskManagers, which go on running other work.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_cannot_start_fails_the_job_not_the_fleet() -> anyhow::Result<()> {
    let mut cluster = start_cluster(3, test_config()).await?;
    cluster.start_taskmanager("tm-0", 2, &[])?;
    cluster.start_taskmanager("tm-1", 2, &[])?;
    let client = cluster.client()?;
    wait_taskmanagers_alive(&client, 2).await?;

    let not_executable = cluster.dir.path().join("not-executable.sh");
    std::fs::write(&not_executable, "#!/bin/sh\nexit 0\n")?;
    std::fs::set_permissions(&not_executable, std::fs::Permissions::from_mode(0o644))?;
    let cases = [
        (
            "/nonexistent/dispatcher-test-command",
            vec![],
            "No such file",
        ),
        (
            not_executable.to_str().expect("utf-8 path"),
            vec![],
            "ermission denied",
        ),
        // One argument longer than exec takes (128 KiB on Linux).
        ("/bin/echo", vec!["x".repeat(200_000)], "too long"),
    ];
    for (command, args, why) in cases {
        log_phase(&format!("a job running {command}"));
        let job = client
            .submit(job_request(
                "cannot-start",
                6,
                1,
                3,
                (command.to_string(), args),
            ))
            .await?;
        let done = wait_job_state(&client, &job.job_id, &["failed", "finished"], DEADLINE).await?;
        assert_eq!(done.state, "failed");
        let errors: Vec<&str> = done
            .shards
            .iter()
            .filter_map(|s| s.error.as_deref())
            .collect();
        assert!(
            errors
                .iter()
                .any(|e| e.contains("cannot start") && e.contains(why)),
            "{errors:?}"
        );
        for shard in &done.shards {
            assert!(
                shard.failures <= 1,
                "retried a command that cannot start: {shard:?}"
            );
        }
    }

    log_phase("the TaskManagers are not blamed and keep running other work");
    for tm in client.list_taskmanagers().await? {
        assert_eq!(tm.shard_failures, 0, "{tm:?}");
        assert!(tm.excluded_until_ms.unwrap_or(0) == 0, "{tm:?}");
        assert_eq!(tm.state, "alive");
    }
    let job = client
        .submit(job_request("after", 8, 1, 1, ("/bin/true".into(), vec![])))
        .await?;
    let done = wait_job_state(&client, &job.job_id, &["failed", "finished"], DEADLINE).await?;
    assert_eq!(done.state, "finished");
    Ok(())
}
