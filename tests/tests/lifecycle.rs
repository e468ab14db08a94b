//! The local stack's lifecycle as a newcomer meets it: `cargo xtask reset` starts over (new secrets, new
//! data, serving), refuses while the stack runs, and a state folder removed by hand is no trap: as root
//! the PostgreSQL cluster outlives it (it lives in /var/tmp), and `up` then says so and names the command
//! that fixes it, instead of a raw `psql` error. The same xtask binary `cargo xtask test` runs, on free
//! ports and a temporary state folder; the edge under Spin when one is found, as `up` decides.

use std::path::Path;
use std::process::Command;

use aside_tests::harness::{
    TestApp, UpProcess, bin_dir, free_port, start_up, temp_dir, xtask_binary,
};
use serde_json::json;

struct Ports {
    edge: u16,
    origin: u16,
    redis: u16,
    postgres: u16,
}

fn up_args(state: &Path, ports: &Ports) -> Vec<String> {
    [
        ("--state-dir", state.display().to_string()),
        ("--edge-port", ports.edge.to_string()),
        ("--origin-port", ports.origin.to_string()),
        ("--redis-port", ports.redis.to_string()),
        ("--postgres-port", ports.postgres.to_string()),
        ("--count", "20".to_string()),
        ("--bin-dir", bin_dir().display().to_string()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_string(), value])
    .collect()
}

/// `xtask <args> --state-dir <state>`: (success, stdout, stderr).
fn xtask(xtask: &Path, args: &[&str], state: &Path) -> (bool, String, String) {
    let output = Command::new(xtask)
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .output()
        .expect("run xtask");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `cargo xtask stop`, and `up` has ended.
fn stop(xtask_bin: &Path, state: &Path, mut up: UpProcess) {
    let (ok, stdout, stderr) = xtask(xtask_bin, &["stop"], state);
    assert!(ok && stdout.contains("stopped"), "stop: {stdout}{stderr}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !up.child.has_exited() {
        assert!(
            std::time::Instant::now() < deadline,
            "`up` still runs after `cargo xtask stop` returned"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn secret(state: &Path, name: &str) -> String {
    std::fs::read_to_string(state.join("secrets").join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn reset_starts_over_and_a_state_folder_removed_by_hand_is_no_trap() {
    let xtask_bin = xtask_binary();
    let dir = temp_dir("aside-lifecycle");
    let state = dir.join("state");
    let postgres = xtask::stack::postgres_dir(&state);
    let ports = Ports {
        edge: free_port(),
        origin: free_port(),
        redis: free_port(),
        postgres: free_port(),
    };
    let args = up_args(&state, &ports);
    let origin = TestApp::new(format!("http://127.0.0.1:{}", ports.origin));

    // A first stack, and a profile made in it.
    let first = start_up(&xtask_bin, &args, &[], &dir.join("up-1.stderr"))
        .unwrap_or_else(|e| panic!("first up:\n{}", e.stderr));
    let first_token = secret(&state, "origin-token");
    let created = origin
        .with_token(&first_token)
        .post(
            "/users",
            &json!({"full_name": "Ana Silva", "gender": "F", "birth_date": "1990-01-01",
                    "department": "Sales", "email": "ana.lifecycle@example.org",
                    "username": "ana.lifecycle"}),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let created_id = created.json()["id"].as_i64().expect("id");

    // `reset` refuses while the stack runs, and changes nothing.
    let (ok, stdout, stderr) = xtask(&xtask_bin, &["reset"], &state);
    assert!(!ok, "reset while the stack runs must fail: {stdout}");
    assert!(stderr.contains("stop it first"), "{stderr}");
    assert!(state.join("secrets").exists() && postgres.join("data").exists());
    assert_eq!(secret(&state, "origin-token"), first_token);

    // The state folder removed by hand after a stop.
    stop(&xtask_bin, &state, first);
    std::fs::remove_dir_all(&state).expect("rm -rf the state folder");
    if !postgres.starts_with(&state) {
        // As root (CI): the cluster is still there, with the old passwords. `up` says what it found and
        // the command that fixes it; it changes nothing.
        let failed = match start_up(&xtask_bin, &args, &[], &dir.join("up-2.stderr")) {
            Ok(_) => panic!("up over another stack's PostgreSQL cluster came up"),
            Err(failed) => failed,
        };
        assert!(failed.exited, "up neither failed nor came up");
        assert!(
            failed.stderr.contains("was made by another stack")
                && failed.stderr.contains("cargo xtask reset")
                && failed.stderr.contains(&postgres.display().to_string()),
            "up's message: {}",
            failed.stderr
        );
        assert!(
            !failed.stderr.contains("psql:"),
            "a raw psql error: {}",
            failed.stderr
        );
        assert!(
            postgres.join("data/PG_VERSION").exists(),
            "up changed the cluster"
        );

        // The fix it names.
        let (ok, stdout, stderr) = xtask(&xtask_bin, &["reset"], &state);
        assert!(ok, "reset: {stdout}{stderr}");
        assert!(
            stdout.contains("removed:") && stdout.contains(&postgres.display().to_string()),
            "reset says what it removed: {stdout}"
        );
        assert!(!postgres.exists() && !state.exists());
    }

    // A working stack again: new secrets, new data, serving through the edge.
    let second = start_up(&xtask_bin, &args, &[], &dir.join("up-3.stderr"))
        .unwrap_or_else(|e| panic!("up after reset:\n{}", e.stderr));
    let second_token = secret(&state, "origin-token");
    assert_ne!(second_token, first_token, "the new stack has new secrets");
    let gone = origin
        .with_token(&second_token)
        .get(&format!("/users/{created_id}"))
        .await;
    assert_eq!(gone.status, 404, "the old stack's data is gone: {gone:?}");
    let edge = TestApp::new(format!("http://127.0.0.1:{}", ports.edge))
        .with_token(&secret(&state, "token-admin"));
    let answer = edge.get("/users/1").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.assert_edge_tagged();

    // Reset after a run: everything goes, and a second reset has nothing left to remove.
    stop(&xtask_bin, &state, second);
    let (ok, stdout, stderr) = xtask(&xtask_bin, &["reset"], &state);
    assert!(ok && stdout.contains("removed:"), "{stdout}{stderr}");
    assert!(!state.exists() && !postgres.exists());
    let (ok, stdout, _) = xtask(&xtask_bin, &["reset"], &state);
    assert!(ok && stdout.contains("nothing to remove"), "{stdout}");
}

#[test]
fn reset_refuses_a_folder_that_is_not_a_state_folder() {
    let dir = temp_dir("aside-lifecycle-foreign");
    std::fs::write(dir.join("notes.txt"), "mine").expect("write");
    let (ok, _, stderr) = xtask(&xtask_binary(), &["reset"], &dir);
    assert!(!ok, "reset removed a folder `up` did not make");
    assert!(
        stderr.contains("does not look like a `cargo xtask up` state folder"),
        "{stderr}"
    );
    assert!(dir.join("notes.txt").exists(), "reset changed the folder");
}
