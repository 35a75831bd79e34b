//! The deployment files in `dist/` and the `Dockerfile`, checked as far as this machine can:
//! systemd's own verifier on the units, the Kubernetes manifests parsed and held to the drain
//! sequence, the image built with the README's command. (No Kubernetes cluster and no Docker
//! engine run here; `docs/B-operations.md` says what was and was not run.)

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::daemon::loopd_binary;
use common::require;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `systemd-analyze verify` accepts the service and socket units (with `ExecStart=`
/// pointing at this build, since the verifier checks that the program exists).
#[test]
fn systemd_units_verify() {
    let analyze = require("systemd-analyze", "systemd");
    let dir = std::env::temp_dir().join(format!("loopd-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let units = ["loopd.service", "loopd.socket", "loopd-admin.socket"];
    for unit in units {
        let text = std::fs::read_to_string(root().join("dist/systemd").join(unit)).unwrap();
        let text = text.replace("/usr/local/bin/loopd", loopd_binary().to_str().unwrap());
        std::fs::write(dir.join(unit), text).unwrap();
    }
    let out = Command::new(analyze)
        .arg("verify")
        .args(units.iter().map(|u| dir.join(u)))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
    let service = std::fs::read_to_string(root().join("dist/systemd/loopd.service")).unwrap();
    for setting in [
        "Type=notify",
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "LimitNOFILE=",
    ] {
        assert!(service.contains(setting), "{setting} missing");
    }
}

/// Every YAML document of a file, as JSON, through Debian's PyYAML.
fn yaml_documents(path: &Path) -> Vec<serde_json::Value> {
    let python = require("python3", "python3");
    let out = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} does not parse (PyYAML comes from Debian's python3-yaml): {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Seconds in a duration argument such as `10s`.
fn seconds(arg: &str) -> u64 {
    loopd::config::parse_duration(arg).unwrap().as_secs()
}

/// The manifests parse; the Deployment probes `/readyz` and `/healthz` on the admin port,
/// gives the drain time to finish (grace period above drain delay plus drain timeout), and a
/// Service fronts it; the Job runs loopd-bench from several pods.
#[test]
fn kubernetes_manifests_parse_and_fit_the_drain() {
    let docs = yaml_documents(&root().join("dist/kubernetes/loopd.yaml"));
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("no {k}"))
    };
    let pod = &kind("Deployment")["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let flag = |name: &str| {
        let i = args
            .iter()
            .position(|a| *a == name)
            .unwrap_or_else(|| panic!("{name}"));
        seconds(args[i + 1])
    };
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace > flag("--drain-delay") + flag("--drain-timeout"),
        "the kubelet would kill loopd mid-drain"
    );
    assert_eq!(kind("Service")["spec"]["selector"]["app"], "loopd");

    let jobs = yaml_documents(&root().join("dist/kubernetes/loopd-bench-job.yaml"));
    let job = &jobs[0];
    assert_eq!(job["kind"], "Job");
    assert!(job["spec"]["parallelism"].as_u64().unwrap() >= 2);
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["command"][0],
        "/usr/local/bin/loopd-bench"
    );
}

/// The image is multi-stage with a distroless runtime, and builds with the command the
/// README gives.
#[test]
fn dockerfile_builds_with_the_readme_command() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert_eq!(
        dockerfile.matches("\nFROM ").count() + usize::from(dockerfile.starts_with("FROM ")),
        2
    );
    assert!(
        dockerfile.contains("gcr.io/distroless/"),
        "distroless runtime"
    );
    let build = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("RUN "))
        .expect("a RUN line");
    assert!(build.starts_with("cargo build --release"), "{build}");
    assert!(readme.contains(build), "the README does not give `{build}`");
}
