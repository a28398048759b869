//! The files in `deploy/` agree with the binary: every YAML file parses; the Kubernetes
//! manifests, the systemd units and the container file use only flags the binary has, and
//! their ports and probes match the `--listen` and `--http-listen` they pass; the config
//! files load as the binary loads them; the alert rules name metrics replicas export.

use dispatcher::config::flags::{read_agent_file, read_serve_file};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use yaml_rust2::{Yaml, YamlLoader};

const BINARY: &str = env!("CARGO_BIN_EXE_dispatcher");

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn files_with(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("deploy/ is there") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            out.extend(files_with(&path, extensions));
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| extensions.contains(&e))
        {
            out.push(path);
        }
    }
    out
}

fn load(path: &Path) -> Vec<Yaml> {
    let text = std::fs::read_to_string(path).expect("readable");
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `--flags` a subcommand's help lists.
fn known_flags(subcommand: &[&str]) -> BTreeSet<String> {
    let help = Command::new(BINARY)
        .args(subcommand)
        .arg("--help")
        .output()
        .expect("help runs");
    flags_in(&String::from_utf8_lossy(&help.stdout))
}

fn flags_in(text: &str) -> BTreeSet<String> {
    text.split(|c: char| c.is_whitespace() || c == '[' || c == ']' || c == '"' || c == '=')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_string()
        })
        .collect()
}

/// The port in the value after `flag` in `args`.
fn port_after(args: &str, flag: &str) -> i64 {
    let value = args
        .split_whitespace()
        .skip_while(|w| *w != flag)
        .nth(1)
        .unwrap_or_else(|| panic!("{flag} is not passed in {args}"));
    value
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{flag} {value} has no port"))
}

fn by_kind<'a>(docs: &'a [Yaml], kind: &str) -> &'a Yaml {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn every_yaml_file_in_deploy_parses() {
    let files = files_with(&deploy(), &["yaml", "yml"]);
    assert!(files.len() >= 4, "{files:?}");
    for file in files {
        assert!(!load(&file).is_empty(), "{} is empty", file.display());
    }
}

/// Check one workload's container against the subcommand it runs; returns its HTTP port.
fn check_workload(container: &Yaml, subcommand: &str) -> i64 {
    let args: String = container["args"]
        .as_vec()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(args.contains(&format!("dispatcher {subcommand}")), "{args}");
    let known = known_flags(&[subcommand]);
    for flag in flags_in(&args) {
        assert!(known.contains(&flag), "{subcommand} has no {flag}");
    }
    let http = port_after(&args, "--http-listen");
    let ports: Vec<i64> = container["ports"]
        .as_vec()
        .expect("ports")
        .iter()
        .filter_map(|p| p["containerPort"].as_i64())
        .collect();
    assert!(
        ports.contains(&http),
        "the HTTP port {http} is not in {ports:?}"
    );
    if subcommand == "serve" {
        let grpc = port_after(&args, "--listen");
        assert!(
            ports.contains(&grpc),
            "the gRPC port {grpc} is not in {ports:?}"
        );
    }
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(get["port"].as_i64(), Some(http), "{probe} port");
        // TLS is on in these manifests (--tls-dir): the HTTP side is HTTPS.
        assert_eq!(get["scheme"].as_str(), Some("HTTPS"), "{probe} scheme");
    }
    http
}

#[test]
fn kubernetes_ports_and_probes_agree_with_the_flags() {
    let docs = load(&deploy().join("kubernetes/dispatcher.yaml"));
    let set = by_kind(&docs, "StatefulSet");
    let container = &set["spec"]["template"]["spec"]["containers"][0];
    let http = check_workload(container, "serve");
    let labels = &set["spec"]["selector"]["matchLabels"];
    assert_eq!(&set["spec"]["template"]["metadata"]["labels"], labels);
    let budget = by_kind(&docs, "PodDisruptionBudget");
    assert_eq!(&budget["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(budget["spec"]["maxUnavailable"].as_i64(), Some(1));
    let headless = docs
        .iter()
        .find(|d| {
            d["kind"].as_str() == Some("Service") && d["spec"]["clusterIP"].as_str() == Some("None")
        })
        .expect("a headless Service");
    assert_eq!(
        set["spec"]["serviceName"].as_str(),
        headless["metadata"]["name"].as_str()
    );
    let service_ports: Vec<i64> = headless["spec"]["ports"]
        .as_vec()
        .expect("ports")
        .iter()
        .filter_map(|p| p["port"].as_i64())
        .collect();
    assert!(service_ports.contains(&http));
    assert_eq!(
        set["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"].as_str(),
        Some(http.to_string().as_str())
    );

    let agents = load(&deploy().join("kubernetes/taskmanager.yaml"));
    let set = by_kind(&agents, "StatefulSet");
    check_workload(
        &set["spec"]["template"]["spec"]["containers"][0],
        "taskmanager",
    );
}

#[test]
fn systemd_units_and_config_files_are_what_the_binary_reads() {
    let systemd = deploy().join("systemd");
    for (unit, subcommand) in [
        ("dispatcher-replica.service", "serve"),
        ("dispatcher-taskmanager.service", "taskmanager"),
    ] {
        let text = std::fs::read_to_string(systemd.join(unit)).expect("unit");
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .expect("ExecStart");
        assert!(
            exec.contains(&format!("dispatcher {subcommand} ")),
            "{exec}"
        );
        let known = known_flags(&[subcommand]);
        for flag in flags_in(exec) {
            assert!(known.contains(&flag), "{unit}: {subcommand} has no {flag}");
        }
    }
    let (serve, _config) =
        read_serve_file(&systemd.join("dispatcher.toml")).expect("the replica's file loads");
    let agent = read_agent_file(&systemd.join("taskmanager.toml")).expect("the agent's file loads");

    // Prometheus scrapes the ports those files open.
    let prometheus = load(&deploy().join("prometheus/prometheus.yml"));
    let targets: Vec<String> = prometheus[0]["scrape_configs"]
        .as_vec()
        .expect("scrape configs")
        .iter()
        .flat_map(|c| {
            c["static_configs"][0]["targets"]
                .as_vec()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    for port in [
        serve.http_listen.expect("http_listen").port(),
        agent.http_listen.expect("http_listen").port(),
    ] {
        assert!(
            targets.iter().any(|t| t.ends_with(&format!(":{port}"))),
            "no scrape target on port {port}: {targets:?}"
        );
    }
}

/// The metric families a replica or an agent exports, as `# TYPE` lines name them (a
/// labelled family shows only once it has a series, so each is given one).
fn exported_families() -> BTreeSet<String> {
    let agent = dispatcher::metrics::AgentMetrics::new(1);
    agent.set_isolation("full");
    let agent_families: Vec<String> = agent
        .encode()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    use dispatcher::metrics::{latency_histogram, Metrics, ProposalError, RaftView};
    let metrics = Metrics::new(latency_histogram());
    metrics.refresh(
        RaftView::default(),
        &dispatcher::domain::ClusterState::default(),
    );
    metrics.entry_applied(std::time::Duration::ZERO, ["taskmanager_lost"].into_iter());
    metrics.rpc_served("unknown", "OK");
    let _ =
        futures::executor::block_on(metrics.time_proposal(async { Ok::<(), ProposalError>(()) }));
    metrics
        .encode()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .chain(agent_families)
        .collect()
}

#[test]
fn alert_rules_name_metrics_that_replicas_export() {
    let families = exported_families();
    let alerts = load(&deploy().join("prometheus/alerts.yml"));
    let rules = alerts[0]["groups"][0]["rules"].as_vec().expect("rules");
    assert!(rules.len() >= 4);
    let mut named = 0;
    for rule in rules {
        let name = rule["alert"].as_str().expect("alert name");
        let expr = rule["expr"].as_str().expect("expr");
        for token in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !token.starts_with("dispatcher_") {
                continue;
            }
            let base = ["_total", "_count", "_sum", "_bucket", "_info"]
                .iter()
                .find_map(|s| token.strip_suffix(s))
                .unwrap_or(token);
            assert!(
                families.contains(base) || families.contains(token),
                "alert {name} uses {token}, which neither replicas nor agents export"
            );
            named += 1;
        }
    }
    assert!(named >= 5);
    let prometheus = load(&deploy().join("prometheus/prometheus.yml"));
    let rule_files = prometheus[0]["rule_files"].as_vec().expect("rule files");
    assert!(rule_files.iter().any(|f| f.as_str() == Some("alerts.yml")));
}

#[test]
fn the_container_image_runs_as_a_user_and_exposes_the_ports_used() {
    let text = std::fs::read_to_string(deploy().join("Containerfile")).expect("Containerfile");
    assert!(
        text.lines().filter(|l| l.starts_with("FROM ")).count() >= 2,
        "multi-stage"
    );
    let user = text
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "not root: {user}"
    );
    let exposed: BTreeSet<i64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(|l| {
            l.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<_>>()
        })
        .collect();
    let docs = load(&deploy().join("kubernetes/dispatcher.yaml"));
    let set = by_kind(&docs, "StatefulSet");
    for port in set["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_vec()
        .expect("ports")
    {
        let port = port["containerPort"].as_i64().expect("port");
        assert!(exposed.contains(&port), "the image does not expose {port}");
    }
}

/// Each pod of `set` mounts only its own directory of the TLS Secret, holding ca.pem and
/// `party(ordinal)`'s certificate and key; nothing anywhere mounts the CA key.
fn check_least_privilege(set: &Yaml, pod_prefix: &str, party: impl Fn(i64) -> String) {
    let pod = &set["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let mount = container["volumeMounts"]
        .as_vec()
        .expect("mounts")
        .iter()
        .find(|m| m["mountPath"].as_str() == Some("/etc/dispatcher/tls"))
        .expect("a TLS mount");
    assert_eq!(mount["subPathExpr"].as_str(), Some("$(POD_NAME)"));
    let env = container["env"].as_vec().expect("env");
    assert!(env.iter().any(|e| e["name"].as_str() == Some("POD_NAME")
        && e["valueFrom"]["fieldRef"]["fieldPath"].as_str() == Some("metadata.name")));
    let volume = pod["volumes"]
        .as_vec()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the TLS volume");
    let items = volume["secret"]["items"].as_vec().expect("items");
    let replicas = set["spec"]["replicas"].as_i64().expect("replicas");
    for ordinal in 0..replicas {
        let dir = format!("{pod_prefix}-{ordinal}/");
        let mut files: Vec<String> = items
            .iter()
            .filter_map(|i| i["path"].as_str()?.strip_prefix(&dir).map(str::to_string))
            .collect();
        files.sort();
        let me = party(ordinal);
        let mut expected = vec![
            "ca.pem".to_string(),
            format!("{me}-key.pem"),
            format!("{me}.pem"),
        ];
        expected.sort();
        assert_eq!(
            files, expected,
            "pod {ordinal} sees more or less than its own"
        );
        for item in items
            .iter()
            .filter(|i| i["path"].as_str().is_some_and(|p| p.starts_with(&dir)))
        {
            assert_eq!(
                item["path"].as_str().and_then(|p| p.strip_prefix(&dir)),
                item["key"].as_str(),
                "a file under another name"
            );
        }
    }
    assert!(
        items
            .iter()
            .all(|i| i["key"].as_str() != Some("ca-key.pem")),
        "the CA key is mounted"
    );
}

#[test]
fn every_pod_gets_only_its_own_key_and_never_the_ca_key() {
    let docs = load(&deploy().join("kubernetes/dispatcher.yaml"));
    check_least_privilege(by_kind(&docs, "StatefulSet"), "dispatcher", |n| {
        format!("replica-{}", n + 1)
    });
    let agents = load(&deploy().join("kubernetes/taskmanager.yaml"));
    check_least_privilege(by_kind(&agents, "StatefulSet"), "worker", |n| {
        format!("tm-worker-{n}")
    });
    for file in files_with(&deploy(), &["yaml", "yml", "toml", "service"]) {
        let text = std::fs::read_to_string(&file).expect("read");
        for line in text.lines().filter(|l| l.contains("ca-key")) {
            assert!(
                line.trim_start().starts_with('#'),
                "{} uses the CA key: {line}",
                file.display()
            );
        }
    }
}

#[test]
fn the_shipped_agent_files_give_the_sandbox_what_it_needs_and_no_more() {
    let needed = [
        "SETUID",
        "SETGID",
        "SYS_ADMIN",
        "CHOWN",
        "FOWNER",
        "DAC_OVERRIDE",
        "KILL",
    ];
    let unit = std::fs::read_to_string(deploy().join("systemd/dispatcher-taskmanager.service"))
        .expect("unit");
    assert!(unit.lines().any(|l| l == "User=root"), "{unit}");
    assert!(unit.lines().any(|l| l == "Delegate=yes"), "{unit}");
    let bounding: Vec<&str> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("a capability bounding set")
        .split_whitespace()
        .collect();
    let wanted: Vec<String> = needed.iter().map(|c| format!("CAP_{c}")).collect();
    assert_eq!(bounding, wanted, "exactly the sandbox's capabilities");

    let agents = load(&deploy().join("kubernetes/taskmanager.yaml"));
    let set = by_kind(&agents, "StatefulSet");
    let context = &set["spec"]["template"]["spec"]["containers"][0]["securityContext"];
    assert_eq!(context["runAsUser"].as_i64(), Some(0));
    assert_eq!(context["allowPrivilegeEscalation"].as_bool(), Some(false));
    let dropped: Vec<&str> = context["capabilities"]["drop"]
        .as_vec()
        .expect("dropped capabilities")
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    assert_eq!(dropped, ["ALL"]);
    let added: Vec<&str> = context["capabilities"]["add"]
        .as_vec()
        .expect("added capabilities")
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    assert_eq!(added, needed);
}
