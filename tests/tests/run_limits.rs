//! Root integration test: `agentmon run` from inside a limited cgroup keeps that cgroup's limits,
//! because the session cgroup is created below the caller's cgroup, not beside it.

use std::{path::Path, process::Command};

use integration_tests::{cgroup2_mount, json_lines, scratch, Daemon};

/// The `0::` line of a `/proc/<pid>/cgroup` text, and the line of a v1 hierarchy (`:pids:`).
fn line<'a>(text: &'a str, pat: &str) -> Option<&'a str> {
    text.lines().find(|l| l.contains(pat))
}

/// Removes the test's cgroup (and anything left under it) and the controller it enabled.
struct Limited {
    dir: std::path::PathBuf,
    enabled_hugetlb: bool,
}

impl Drop for Limited {
    fn drop(&mut self) {
        fn remove(d: &Path) {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    remove(&e.path());
                }
            }
            let _ = std::fs::remove_dir(d);
        }
        remove(&self.dir);
        if self.enabled_hugetlb {
            let _ = std::fs::write(cgroup2_mount().join("cgroup.subtree_control"), "-hugetlb");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn run_inside_a_limited_cgroup_keeps_the_limit() {
    let d = Daemon::start("runlimits", &[]).await;
    let dir = scratch("runlimits");
    let mount = cgroup2_mount();
    let mut limited =
        Limited { dir: mount.join(format!("agentmon-test-limited-{}", std::process::id())), enabled_hugetlb: false };
    std::fs::create_dir(&limited.dir).expect("create the limited cgroup");
    // The one controller cgroup v2 has on this host is hugetlb: cap it at 0 when we can.
    let subtree = std::fs::read_to_string(mount.join("cgroup.subtree_control")).unwrap_or_default();
    if !subtree.split_whitespace().any(|c| c == "hugetlb")
        && std::fs::write(mount.join("cgroup.subtree_control"), "+hugetlb").is_ok()
    {
        limited.enabled_hugetlb = true;
    }
    let max = limited.dir.join("hugetlb.2MB.max");
    let capped = max.exists() && std::fs::write(&max, "0").is_ok();
    if !capped {
        println!("note: {} is absent or not writable here; checking the placement only", max.display());
    }

    // A child shell moves itself into the limited cgroup, then execs `agentmon run`, whose
    // agent prints where it ended up.
    let procs = limited.dir.join("cgroup.procs");
    let out = Command::new("sh")
        .args([
            "-c",
            &format!("echo $$ > {} && exec \"$0\" run --agent limits -- cat /proc/self/cgroup", procs.display()),
        ])
        .arg(integration_tests::bin())
        .current_dir(&dir)
        .env("AGENTMON_RUNTIME_DIR", &d.runtime_dir)
        .output()
        .expect("run agentmon run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let id = stderr.lines().find_map(|l| l.strip_prefix("agentmon: session ")).expect("session line").trim().to_owned();
    let session = d.wait_session_end(&id);

    let cgroup = session["cgroup"].as_str().expect("cgroup");
    let rel = limited.dir.strip_prefix(&mount).expect("under the mount");
    assert!(
        Path::new(cgroup).parent() == Some(limited.dir.as_path()) && cgroup.ends_with(&format!("/agentmon-{id}")),
        "the session cgroup {cgroup} is agentmon-<id> directly below the limited cgroup {}",
        limited.dir.display()
    );
    let agent = String::from_utf8_lossy(&out.stdout);
    let v2 = line(&agent, "0::").expect("the agent's cgroup2 line");
    assert_eq!(v2, format!("0::/{}/agentmon-{id}", rel.display()), "the agent ran below the limited cgroup:\n{agent}");
    // Nothing else moved: the v1 pids hierarchy membership is the caller's.
    let mine = std::fs::read_to_string("/proc/self/cgroup").expect("own cgroup");
    assert_eq!(line(&agent, ":pids:"), line(&mine, ":pids:"), "v1 pids cgroup unchanged:\n{agent}");
    if capped {
        assert_eq!(
            std::fs::read_to_string(&max).expect("max").trim(),
            "0",
            "the limit above the session is still in force"
        );
    }
    // The session's cgroup is removed when it ends, wherever it was.
    assert!(!Path::new(cgroup).exists(), "{cgroup} was removed at the session end");
    assert_eq!(json_lines(&d.cli(&["sessions", "--json"])).iter().filter(|s| s["id"] == id.as_str()).count(), 1);
}
