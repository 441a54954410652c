//! The deployment files in `deploy/` against the binary they run.
//!
//! No container engine or cluster is needed: each check reads a file and
//! asks the built `ringkv` binary.
//!
//! - Every `ringkv serve` command line (the Dockerfile's `CMD`, the
//!   StatefulSet's `args`, the systemd unit's `ExecStart`) uses only flags
//!   that `ringkv serve --help` lists, and clap accepts the whole line: it
//!   parses every argument, values included, before it honours a trailing
//!   `--help`. A renamed flag fails here.
//! - The systemd example config parses as a node `Config` and validates.
//! - The Kubernetes manifest agrees with itself: the seed list names exactly
//!   `replicas` pods through the headless Service that `serviceName` names,
//!   each pod's `--advertise` is spelled as its own seed (nodes skip
//!   themselves in the seed list by string), and listen address, seeds,
//!   probes and Services all use the container's one port.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use ringkv_tests::process::ringkv_bin;
use serde::Deserialize;
use serde_json::Value;

/// A file of the repository, by path from its root.
fn repo_file(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The long options `ringkv serve --help` lists, e.g. `--data-dir`.
fn serve_flags() -> BTreeSet<String> {
    let out = Command::new(ringkv_bin()).args(["serve", "--help"]).output().expect("run ringkv serve --help");
    assert!(out.status.success(), "ringkv serve --help failed: {}", String::from_utf8_lossy(&out.stderr));
    let help = String::from_utf8(out.stdout).expect("utf-8 help");
    let flags: BTreeSet<String> = help
        .split_whitespace()
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.trim_end_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).to_string())
        .collect();
    assert!(flags.contains("--seeds") && flags.contains("--listen"), "help lists no serve flags: {help}");
    flags
}

/// What is wrong with `args` (starting with `serve`) as a `ringkv` command
/// line: flags that `serve` lacks, or clap's own error. Empty when sound.
fn serve_problems(args: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    if args.first().map(String::as_str) != Some("serve") {
        problems.push(format!("does not start with `serve`: {args:?}"));
        return problems;
    }
    let known = serve_flags();
    for arg in args.iter().filter(|a| a.starts_with("--")) {
        let name = arg.split_once('=').map_or(arg.as_str(), |(n, _)| n);
        if !known.contains(name) {
            problems.push(format!("`ringkv serve` has no flag {name}"));
        }
    }
    let out = Command::new(ringkv_bin()).args(args).arg("--help").output().expect("run ringkv");
    if !out.status.success() {
        problems.push(format!("clap refuses the line: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    problems
}

fn assert_serve_accepts(origin: &str, args: &[String]) {
    let problems = serve_problems(args);
    assert!(problems.is_empty(), "{origin}: {problems:#?}");
}

/// The value of `--name VALUE` or `--name=VALUE` in `args`.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let eq = format!("{name}=");
    args.iter().enumerate().find_map(|(i, a)| match a.strip_prefix(&eq) {
        Some(v) => Some(v),
        None if a == name => args.get(i + 1).map(String::as_str),
        None => None,
    })
}

/// The port of a `host:port` address.
fn port_of(addr: &str) -> u16 {
    let (_, port) = addr.rsplit_once(':').unwrap_or_else(|| panic!("{addr:?} has no port"));
    port.parse().unwrap_or_else(|e| panic!("{addr:?}: port: {e}"))
}

#[test]
fn a_renamed_or_misspelt_serve_flag_is_reported() {
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(serve_problems(&args(&["serve", "--id=n1", "--seeds=a:1,b:2", "--data-dir", "/d"])).is_empty());
    let problems = serve_problems(&args(&["serve", "--id=n1", "--seed=a:1"]));
    assert!(problems.iter().any(|p| p.contains("no flag --seed")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("clap refuses")), "{problems:?}");
    let problems = serve_problems(&args(&["serve", "--replication-factor=three"]));
    assert!(problems.iter().any(|p| p.contains("clap refuses")), "a bad value is caught too: {problems:?}");
}

/// A Dockerfile's instructions, continuation lines joined, comments dropped.
fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                if let Some((word, rest)) = current.trim().split_once(char::is_whitespace) {
                    out.push((word.to_uppercase(), rest.trim().to_string()));
                }
                current.clear();
            }
        }
    }
    out
}

#[test]
fn dockerfile_runs_real_serve_flags_and_checks_health_on_the_exposed_port() {
    let text = repo_file("deploy/Dockerfile");
    let instructions = dockerfile_instructions(&text);
    // In the runtime stage: everything after the last FROM.
    let last_from = instructions.iter().rposition(|(w, _)| w == "FROM").expect("a FROM");
    let runtime = &instructions[last_from..];
    let get = |word: &str| runtime.iter().rev().find(|(w, _)| w == word).map(|(_, r)| r.clone()).unwrap_or_else(|| panic!("no {word}"));
    let json_list =
        |word: &str| -> Vec<String> { serde_json::from_str(&get(word)).unwrap_or_else(|e| panic!("{word} is not a JSON list: {e}")) };

    assert_eq!(json_list("ENTRYPOINT"), ["ringkv"]);
    let cmd = json_list("CMD");
    assert_serve_accepts("Dockerfile CMD", &cmd);

    let port = port_of(flag(&cmd, "--listen").expect("CMD sets --listen"));
    assert_eq!(get("EXPOSE").parse::<u16>().expect("EXPOSE one port"), port, "EXPOSE and --listen");
    let health = get("HEALTHCHECK");
    assert!(
        health.contains("grpc_health_probe") && health.contains(&format!("-addr=127.0.0.1:{port}")),
        "HEALTHCHECK probes grpc.health.v1 on {port}: {health}"
    );
    assert!(runtime.iter().any(|(w, r)| w == "COPY" && r.contains("grpc_health_probe")), "the probe is copied into the runtime image");

    let volumes: Vec<String> = serde_json::from_str(&get("VOLUME")).expect("VOLUME as a JSON list");
    assert_eq!(volumes, [flag(&cmd, "--data-dir").expect("CMD sets --data-dir")], "the data dir is the volume");
    let user = get("USER");
    assert!(!user.starts_with("root") && !user.starts_with("0"), "runs as a non-root user, not {user}");
}

#[test]
fn systemd_unit_runs_real_serve_flags_and_its_example_config_is_valid() {
    let unit = repo_file("deploy/systemd/ringkv.service");
    let directive = |key: &str| -> Vec<String> {
        let prefix = format!("{key}=");
        unit.lines().filter_map(|l| l.trim().strip_prefix(&prefix)).map(String::from).collect()
    };
    let exec = directive("ExecStart");
    assert_eq!(exec.len(), 1, "one ExecStart: {exec:?}");
    let mut words = exec[0].split_whitespace().map(String::from);
    assert_eq!(words.next().as_deref(), Some("/usr/local/bin/ringkv"));
    let args: Vec<String> = words.collect();
    assert_serve_accepts("ringkv.service ExecStart", &args);

    assert_eq!(directive("Restart"), ["on-failure"]);
    assert_eq!(directive("User"), ["ringkv"]);
    assert!(!directive("LimitNOFILE").is_empty(), "LimitNOFILE is set");
    let state = directive("StateDirectory");
    assert_eq!(state.len(), 1);
    assert_eq!(flag(&args, "--data-dir"), Some(format!("/var/lib/{}", state[0]).as_str()), "--data-dir is the StateDirectory");
    assert_eq!(flag(&args, "--config"), Some("/etc/ringkv/node.toml"));
    let sysusers = repo_file("deploy/systemd/ringkv.sysusers");
    assert!(sysusers.lines().any(|l| l.split_whitespace().take(2).eq(["u", "ringkv"])), "sysusers creates the unit's user");

    // The example node.toml is a real node config: unknown fields are refused.
    let config: ringkv_node::Config = toml::from_str(&repo_file("deploy/systemd/node.toml")).expect("deploy/systemd/node.toml parses");
    config.validate().expect("deploy/systemd/node.toml validates");
    let advertise = config.advertise.clone().expect("node.toml sets advertise");
    assert!(config.seeds.contains(&advertise), "advertise {advertise} is spelled as in seeds {:?}", config.seeds);
    assert!(config.seeds.len() >= 3, "the seed list names every initial node: {:?}", config.seeds);
    let port = port_of(&config.listen);
    assert!(config.seeds.iter().all(|s| port_of(s) == port), "seeds use the listen port {port}: {:?}", config.seeds);
}

/// Every document of the Kubernetes manifest, as JSON values.
fn manifests() -> Vec<Value> {
    let text = repo_file("deploy/kubernetes/ringkv.yaml");
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("ringkv.yaml: valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap_or_else(|| panic!("not a list: {v}")).iter().map(|s| s.as_str().expect("a string").to_string()).collect()
}

/// `$(NAME)` references in `s`.
fn env_refs(s: &str) -> Vec<&str> {
    s.split("$(").skip(1).filter_map(|rest| rest.split_once(')').map(|(name, _)| name)).collect()
}

#[test]
fn statefulset_seeds_ports_probes_and_services_agree() {
    let docs = manifests();
    let of_kind = |kind: &'static str| docs.iter().filter(move |d| d["kind"] == kind);
    let sts = of_kind("StatefulSet").next().expect("a StatefulSet");
    let spec = &sts["spec"];
    let name = sts["metadata"]["name"].as_str().unwrap();
    let replicas = spec["replicas"].as_u64().expect("replicas") as usize;
    assert_eq!(spec["podManagementPolicy"], "Parallel", "every pod starts at once");

    let pod = &spec["template"];
    let labels = pod["metadata"]["labels"].as_object().expect("pod labels");
    let selects_pods =
        |selector: &Value| selector.as_object().is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels.get(k) == Some(v)));
    assert!(selects_pods(&spec["selector"]["matchLabels"]));

    // The headless Service is the one serviceName names; it publishes pods before they are ready.
    let services: Vec<&Value> = of_kind("Service").collect();
    let headless = services.iter().find(|s| s["metadata"]["name"] == spec["serviceName"]).expect("a Service named by serviceName");
    let svc = headless["metadata"]["name"].as_str().unwrap();
    assert_eq!(headless["spec"]["clusterIP"], "None", "the governing Service is headless");
    assert_eq!(headless["spec"]["publishNotReadyAddresses"], true, "pods find each other before they are ready");
    let client = services.iter().find(|s| s["spec"]["clusterIP"] != "None").expect("a client Service");

    let containers = pod["spec"]["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let args = strings(&c["args"]);
    assert_serve_accepts("StatefulSet args", &args);

    // The gRPC port: listen, advertise, seeds and Services use it. It speaks
    // TLS, which the kubelet's gRPC probes cannot, so they ask the plaintext
    // health-only port.
    let ports = c["ports"].as_array().expect("container ports");
    let named = |n: &str| ports.iter().find(|p| p["name"] == n).unwrap_or_else(|| panic!("a container port named {n}"));
    let port = named("grpc")["containerPort"].as_u64().expect("containerPort") as u16;
    let port_name = "grpc";
    assert_eq!(port_of(flag(&args, "--listen").expect("--listen")), port);
    let health = named("health")["containerPort"].as_u64().expect("containerPort") as u16;
    assert_eq!(port_of(flag(&args, "--health-listen").expect("--health-listen")), health);
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["grpc"]["port"], health, "{probe} asks grpc.health.v1 on the health port");
    }
    // Metrics: the container port, the flag and the scrape annotation agree.
    let metrics = named("metrics")["containerPort"].as_u64().expect("containerPort") as u16;
    assert_eq!(port_of(flag(&args, "--http-listen").expect("--http-listen")), metrics);
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], metrics.to_string(), "the scrape annotation names the metrics port");
    // TLS files and the token file come from mounted Secrets.
    let mounts = c["volumeMounts"].as_array().expect("volume mounts");
    let volumes = pod["spec"]["volumes"].as_array().expect("pod volumes");
    for f in ["--ca", "--cert", "--key", "--tokens-file"] {
        let path = flag(&args, f).unwrap_or_else(|| panic!("{f} is set: the gRPC port listens off loopback"));
        let m = mounts.iter().find(|m| path.starts_with(m["mountPath"].as_str().unwrap())).unwrap_or_else(|| panic!("{path} is mounted"));
        let v = volumes.iter().find(|v| v["name"] == m["name"]).expect("its volume");
        assert!(v["secret"]["secretName"].is_string(), "{path} comes from a Secret");
    }
    for s in &services {
        assert!(selects_pods(&s["spec"]["selector"]), "{} selects the pods", s["metadata"]["name"]);
        let sp = &s["spec"]["ports"][0];
        assert!(sp["targetPort"] == port_name || sp["targetPort"] == port, "{} targets the container port", s["metadata"]["name"]);
        assert_eq!(sp["port"], port, "{} serves the node port, which seeds and clients use", s["metadata"]["name"]);
    }
    assert!(client["spec"]["ports"].as_array().is_some_and(|p| p.len() == 1));

    // Every $(VAR) in args comes from the downward API.
    let env = c["env"].as_array().expect("env");
    for var in args.iter().flat_map(|a| env_refs(a)) {
        let e = env.iter().find(|e| e["name"] == var).unwrap_or_else(|| panic!("$({var}) in args but not in env"));
        assert!(e["valueFrom"]["fieldRef"]["fieldPath"].is_string(), "{var} comes from a fieldRef");
    }
    let field_of = |path: &str| {
        env.iter().find(|e| e["valueFrom"]["fieldRef"]["fieldPath"] == path).map(|e| format!("$({})", e["name"].as_str().unwrap()))
    };
    let pod_name = field_of("metadata.name").expect("an env var with the pod name");
    let namespace = field_of("metadata.namespace").expect("an env var with the namespace");
    assert_eq!(flag(&args, "--id"), Some(pod_name.as_str()), "node id is the pod name");

    // The seeds: every pod by its stable DNS name, in order; each pod advertises its own entry.
    let seeds: Vec<&str> = flag(&args, "--seeds").expect("--seeds").split(',').collect();
    let expected: Vec<String> = (0..replicas).map(|i| format!("{name}-{i}.{svc}.{namespace}.svc.cluster.local:{port}")).collect();
    assert_eq!(seeds, expected, "the seed list names the {replicas} pods through Service {svc}");
    let advertise = flag(&args, "--advertise").expect("--advertise");
    for (i, seed) in seeds.iter().enumerate() {
        assert_eq!(*seed, advertise.replace(&pod_name, &format!("{name}-{i}")), "pod {i} advertises its own seed entry");
    }

    // The data dir is the volumeClaimTemplate's mount.
    let data_dir = flag(&args, "--data-dir").expect("--data-dir");
    let mount = c["volumeMounts"].as_array().and_then(|m| m.iter().find(|m| m["mountPath"] == data_dir)).expect("data dir mounted");
    let claims = spec["volumeClaimTemplates"].as_array().expect("volumeClaimTemplates");
    assert!(claims.iter().any(|t| t["metadata"]["name"] == mount["name"]), "the data dir is a per-pod claim");

    // Non-root, resource requests, and at most one pod disrupted at a time.
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    assert!(c["resources"]["requests"]["cpu"].is_string() && c["resources"]["requests"]["memory"].is_string());
    let pdb = of_kind("PodDisruptionBudget").next().expect("a PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert!(selects_pods(&pdb["spec"]["selector"]["matchLabels"]));
}
