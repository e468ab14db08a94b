//! The deployment files, checked with the tools users run: Prometheus's `promtool` (the rules, their
//! unit tests, prometheus.yml), kustomize (renders deploy/kubernetes), `kubernetes-validate` (every
//! manifest against the Kubernetes API schemas, strictly) and `check-jsonschema` (the SpinApp against the
//! vendored SpinKube CRD's schema). All offline once the tools are installed (`cargo xtask test` does).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aside_tests::harness::{origin_binary, temp_dir, workspace_root};
use serde_json::Value as Json;
use serde_yaml_ng::Value;

fn run(command: &mut Command) -> Output {
    let description = format!("{command:?}");
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {description}: {e}"))
}

fn assert_success(output: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{what} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn prometheus_dir() -> PathBuf {
    workspace_root().join("deploy/prometheus")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    files
}

/// GitHub's anchor of a Markdown heading: lower case, spaces to `-`, punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn promtool_checks_the_rules_runs_their_unit_tests_and_checks_the_config() {
    let dir = prometheus_dir();
    let rules = yaml_files(&dir.join("rules"));
    assert!(rules.len() >= 2, "{rules:?}");
    let out = run(Command::new("promtool")
        .args(["check", "rules", "--lint=all", "--lint-fatal"])
        .args(&rules));
    assert_success(&out, "promtool check rules");
    let out = run(Command::new("promtool")
        .args(["check", "config"])
        .arg(dir.join("prometheus.yml")));
    assert_success(&out, "promtool check config");
    let tests = yaml_files(&dir.join("tests"));
    let out = run(Command::new("promtool")
        .args(["test", "rules"])
        .args(&tests));
    assert_success(&out, "promtool test rules");

    // Every alert: a runbook section that exists, a severity, and unit tests where it fires and where it
    // stays silent.
    let operations = std::fs::read_to_string(workspace_root().join("docs/operations.md")).unwrap();
    let anchors: BTreeSet<String> = operations
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect();
    let unit_tests: Vec<Value> = tests
        .iter()
        .map(|t| serde_yaml_ng::from_str(&std::fs::read_to_string(t).unwrap()).unwrap())
        .collect();
    let (mut fired, mut silent) = (BTreeSet::new(), BTreeSet::new());
    for file in &unit_tests {
        for case in file["tests"].as_sequence().unwrap() {
            for check in case["alert_rule_test"].as_sequence().into_iter().flatten() {
                let name = check["alertname"].as_str().unwrap().to_string();
                if check["exp_alerts"]
                    .as_sequence()
                    .is_some_and(|a| !a.is_empty())
                {
                    fired.insert(name);
                } else {
                    silent.insert(name);
                }
            }
        }
    }
    let mut alerts = 0;
    for file in &rules {
        let doc: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        for group in doc["groups"].as_sequence().unwrap() {
            for rule in group["rules"].as_sequence().unwrap() {
                let Some(alert) = rule["alert"].as_str() else {
                    continue;
                };
                alerts += 1;
                let runbook = rule["annotations"]["runbook_url"].as_str().unwrap_or("");
                let section = runbook
                    .strip_prefix("docs/operations.md#")
                    .unwrap_or_else(|| panic!("{alert}: runbook_url {runbook:?}"));
                assert!(
                    anchors.contains(section),
                    "{alert}: docs/operations.md has no section #{section}"
                );
                assert!(
                    matches!(rule["labels"]["severity"].as_str(), Some("page" | "ticket")),
                    "{alert}: severity"
                );
                assert!(
                    fired.contains(alert),
                    "{alert}: no unit test where it fires"
                );
                assert!(
                    silent.contains(alert),
                    "{alert}: no unit test where it is silent"
                );
            }
        }
    }
    assert!(alerts >= 12, "{alerts} alerts");
}

/// kustomize as users have it: `kustomize` on PATH, else the one built into `kubectl`.
fn kustomize_build(dir: &Path) -> String {
    let installed = |tool: &str, args: &[&str]| {
        Command::new(tool)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let out = if installed("kustomize", &["version"]) {
        run(Command::new("kustomize").arg("build").arg(dir))
    } else if installed("kubectl", &["version", "--client"]) {
        run(Command::new("kubectl").arg("kustomize").arg(dir))
    } else {
        panic!(
            "neither kustomize nor kubectl is installed: install one to render deploy/kubernetes"
        );
    };
    assert_success(&out, &format!("kustomize build {}", dir.display()))
}

fn documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// The SpinApp CRD's `openAPIV3Schema` as a JSON Schema, made strict: an object that lists its
/// properties accepts no others (the API server would drop them, `--validate=strict` refuses them).
fn spinapp_schema() -> Json {
    let crd: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(
            workspace_root().join("deploy/kubernetes/schemas/core.spinkube.dev_spinapps.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    let version = crd["spec"]["versions"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "v1alpha1")
        .expect("v1alpha1 in the CRD");
    let mut schema: Json =
        serde_json::to_value(&version["schema"]["openAPIV3Schema"]).expect("schema as JSON");
    fn strict(value: &mut Json) {
        match value {
            Json::Object(map) => {
                if map.contains_key("properties")
                    && !map.contains_key("additionalProperties")
                    && !map.contains_key("x-kubernetes-preserve-unknown-fields")
                {
                    map.insert("additionalProperties".into(), Json::Bool(false));
                }
                map.values_mut().for_each(strict);
            }
            Json::Array(items) => items.iter_mut().for_each(strict),
            _ => {}
        }
    }
    strict(&mut schema);
    schema
}

/// Validates `objects` (Kubernetes API kinds and SpinApps), each written to its own file in `dir`;
/// returns the failures' output, empty when all are valid.
fn validate(objects: &[Value], dir: &Path, bin: &Path) -> String {
    let schema = dir.join("spinapp.schema.json");
    std::fs::write(&schema, spinapp_schema().to_string()).unwrap();
    let (mut kube, mut spin) = (Vec::new(), Vec::new());
    for (i, object) in objects.iter().enumerate() {
        let path = dir.join(format!("{i}.yaml"));
        std::fs::write(&path, serde_yaml_ng::to_string(object).unwrap()).unwrap();
        if object["kind"] == "SpinApp" {
            spin.push(path);
        } else {
            kube.push(path);
        }
    }
    let mut failures = String::new();
    let mut check = |command: &mut Command| {
        let out = run(command);
        if !out.status.success() {
            failures.push_str(&String::from_utf8_lossy(&out.stdout));
            failures.push_str(&String::from_utf8_lossy(&out.stderr));
        }
    };
    if !kube.is_empty() {
        // The oldest Kubernetes release still supported upstream when this was written.
        check(
            Command::new(bin.join("kubernetes-validate"))
                .args(["--strict", "--quiet", "--kubernetes-version", "1.32.0"])
                .args(&kube),
        );
    }
    if !spin.is_empty() {
        check(
            Command::new(bin.join("check-jsonschema"))
                .arg("--schemafile")
                .arg(&schema)
                .args(&spin),
        );
    }
    failures
}

fn kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

#[test]
fn kubernetes_manifests_render_with_kustomize_and_validate_against_their_schemas() {
    let root = workspace_root();
    let bin = xtask::prereq::manifest_validators(&root.join("target"))
        .expect("the manifest validators (PyPI: kubernetes-validate, check-jsonschema)");
    let work = temp_dir("aside-manifests");

    let base = documents(&kustomize_build(&root.join("deploy/kubernetes/base")));
    let overlay = documents(&kustomize_build(
        &root.join("deploy/kubernetes/overlays/production"),
    ));
    let secrets: Vec<Value> = yaml_files(&root.join("deploy/kubernetes/secrets"))
        .iter()
        .flat_map(|f| documents(&std::fs::read_to_string(f).unwrap()))
        .collect();
    for (name, objects) in [
        ("base", &base),
        ("overlay", &overlay),
        ("secrets", &secrets),
    ] {
        let dir = work.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let failures = validate(objects, &dir, &bin);
        assert!(failures.is_empty(), "{name}: {failures}");
    }

    // The validators are strict: an unknown field fails, in a Kubernetes kind and in the SpinApp.
    let mut wrong = overlay.clone();
    for object in &mut wrong {
        if object["kind"] == "Deployment" || object["kind"] == "SpinApp" {
            object["spec"]
                .as_mapping_mut()
                .unwrap()
                .insert("replica".into(), 3.into());
        }
    }
    let dir = work.join("wrong");
    std::fs::create_dir_all(&dir).unwrap();
    let failures = validate(&wrong, &dir, &bin);
    assert!(
        failures.contains("deployment/aside-origin") && failures.contains("replica"),
        "an unknown Deployment field passed: {failures}"
    );
    assert!(
        failures.contains("Additional properties are not allowed"),
        "an unknown SpinApp field passed: {failures}"
    );

    // What the overlay must hold.
    let kinds: BTreeSet<&str> = overlay.iter().filter_map(|o| o["kind"].as_str()).collect();
    for expected in [
        "Namespace",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "Job",
        "SpinApp",
    ] {
        assert!(kinds.contains(expected), "{expected} missing: {kinds:?}");
    }
    for object in overlay.iter().filter(|o| o["kind"] != "Namespace") {
        assert_eq!(object["metadata"]["namespace"], "aside", "{object:?}");
        assert_eq!(
            object["metadata"]["labels"]["app.kubernetes.io/part-of"],
            "aside"
        );
    }
    let origin = &kind(&overlay, "Deployment")[0]["spec"]["template"]["spec"];
    let container = &origin["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(container["resources"]["requests"]["cpu"].is_string());
    assert_eq!(origin["securityContext"]["runAsNonRoot"], true);
    let job = &kind(&overlay, "Job")[0]["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = job["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert_eq!(args[..2], ["migrate", "--app-role"]);
    assert_eq!(
        kind(&overlay, "HorizontalPodAutoscaler")[0]["spec"]["minReplicas"],
        3
    );

    // Every ASIDE_* setting the Deployment gives the origin is one the origin reads: a misspelt name
    // would be ignored in silence. The origin's own list is its `serve --help` (each setting's `env`).
    let help = run(Command::new(origin_binary()).args(["serve", "--help"]));
    let help = assert_success(&help, "aside-origin serve --help");
    let known: BTreeSet<&str> = help
        .split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .filter(|w| w.starts_with("ASIDE_"))
        .collect();
    assert!(known.contains("ASIDE_REDIS_URL"), "{help}");
    let mut given = 0;
    for container in origin["containers"].as_sequence().unwrap() {
        for env in container["env"].as_sequence().into_iter().flatten() {
            let name = env["name"].as_str().unwrap();
            if name.starts_with("ASIDE_") {
                given += 1;
                assert!(
                    known.contains(name),
                    "the Deployment sets {name}, which aside-origin does not read ({known:?})"
                );
            }
        }
    }
    assert!(given >= 4, "the Deployment gives the origin its settings");

    // The SpinApp binds only variables spin.toml declares, and every required one; secrets come from a
    // Secret, never as a value.
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(root.join("spin.toml")).unwrap()).unwrap();
    // spin.toml declares exactly the edge's variables (aside_shared::settings, which the edge's config
    // reads and the launchers check names against) and its templates' own.
    let declared: BTreeSet<&str> = manifest["variables"]
        .as_table()
        .expect("spin.toml has [variables]")
        .keys()
        .map(String::as_str)
        .collect();
    let named: BTreeSet<&str> = aside_shared::settings::EDGE_VARIABLES
        .iter()
        .chain(aside_shared::settings::MANIFEST_VARIABLES)
        .copied()
        .collect();
    assert_eq!(
        declared, named,
        "spin.toml's [variables] and aside_shared::settings differ"
    );
    let declared = manifest["variables"].as_table().unwrap();
    let spinapp = &kind(&overlay, "SpinApp")[0]["spec"];
    let mut bound = BTreeSet::new();
    for variable in spinapp["variables"].as_sequence().unwrap() {
        let name = variable["name"].as_str().unwrap();
        let declaration = declared.get(name).unwrap_or_else(|| {
            panic!("the SpinApp binds {name}, which spin.toml does not declare")
        });
        if declaration.get("secret").and_then(|s| s.as_bool()) == Some(true) {
            assert!(
                variable["valueFrom"]["secretKeyRef"]["name"].is_string(),
                "secret variable {name} must come from a Secret"
            );
        }
        bound.insert(name.to_string());
    }
    for (name, declaration) in declared {
        if declaration.get("required").and_then(|r| r.as_bool()) == Some(true) {
            assert!(
                bound.contains(name),
                "required variable {name} is not bound"
            );
        }
    }
    // Secret templates carry no values.
    for secret in &secrets {
        for (key, value) in secret["stringData"].as_mapping().unwrap() {
            assert_eq!(
                value.as_str(),
                Some(""),
                "{key:?} has a value in a template"
            );
        }
    }
}

/// The origin reads exactly the settings `aside_shared::settings::ORIGIN_SETTINGS` names (the list the
/// launchers of `cargo xtask up`, the bench and the harness check their names against): every
/// subcommand's `--help` lists its settings' `env`, and together they are that list.
#[test]
fn the_origin_reads_exactly_the_settings_the_shared_list_names() {
    let mut read = BTreeSet::new();
    for command in ["migrate", "seed", "serve", "cache-stats"] {
        let help = run(Command::new(origin_binary()).args([command, "--help"]));
        let help = assert_success(&help, &format!("aside-origin {command} --help"));
        read.extend(
            help.split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .filter(|w| w.starts_with("ASIDE_"))
                .map(str::to_string),
        );
    }
    let listed: BTreeSet<String> = aside_shared::settings::ORIGIN_SETTINGS
        .iter()
        .map(|s| s.to_string())
        .collect();
    let unlisted: Vec<&String> = read.difference(&listed).collect();
    let unread: Vec<&String> = listed.difference(&read).collect();
    assert!(
        unlisted.is_empty() && unread.is_empty(),
        "the origin reads settings ORIGIN_SETTINGS does not list: {unlisted:?}; ORIGIN_SETTINGS lists \
         settings the origin does not read: {unread:?}"
    );
}
