//! Root integration tests of the session rules (`[[rule]]` in the config): sessions started
//! with no `agentmon run`, by a cgroup that appears (unit and cgroup globs) or by a program
//! that is executed (exe), decided in the kernel before the process runs anything.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use integration_tests::{cgroup2_mount, json_lines, scratch, strs, wait_for, Daemon};
use serde_json::Value;

const W: &str = env!("CARGO_BIN_EXE_agentmon-workload");

/// Removes the test's cgroups, children first, when the test ends.
struct Cgroups(Vec<PathBuf>);

impl Drop for Cgroups {
    fn drop(&mut self) {
        fn remove(d: &Path) {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    remove(&e.path());
                }
            }
            let _ = std::fs::remove_dir(d);
        }
        for d in &self.0 {
            remove(d);
        }
    }
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("agentmon.toml");
    std::fs::write(&p, text).expect("write config");
    p
}

fn sessions(d: &Daemon, agent: &str) -> Vec<Value> {
    json_lines(&d.cli(&["sessions", "--json", "--agent", agent]))
}

/// Run `script` with sh inside cgroup `cg`: the shell moves itself in, then execs the script.
fn run_in(cg: &Path, script: &str) {
    let out = Command::new("sh")
        .args(["-c", &format!("echo $$ > {}/cgroup.procs && exec sh -c \"$0\"", cg.display()), script])
        .output()
        .expect("sh");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn argvs(d: &Daemon, session: &str) -> Vec<Vec<String>> {
    d.actions(session).iter().map(|a| strs(&a["argv"])).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn unit_rule_makes_new_cgroups_sessions_again_after_recreation() {
    let dir = scratch("unitrule");
    let tag = format!("agentmon-rt-{}", std::process::id());
    let cfg = write_config(&dir, &format!("[[rule]]\nagent = \"unit-agent\"\nunit = \"{tag}-*.service\"\n"));
    let d = Daemon::start("unitrule", &["--config", cfg.to_str().expect("utf8")]).await;
    let mount = cgroup2_mount();
    let unit = mount.join(format!("{tag}-web.service"));
    let other = mount.join(format!("{tag}-web.scope"));
    let _cleanup = Cgroups(vec![unit.clone(), other.clone()]);

    // Created after the daemon started; a process runs in it at once.
    std::fs::create_dir(&unit).expect("mkdir unit cgroup");
    let f1 = dir.join("first");
    run_in(&unit, &format!("echo one > {} && cat {}", f1.display(), f1.display()));
    // A cgroup no rule matches: not a session, its process not recorded.
    std::fs::create_dir(&other).expect("mkdir other cgroup");
    run_in(&other, "true");

    let first = wait_for(30, "a unit session with its command", || {
        let s = sessions(&d, "unit-agent").into_iter().find(|s| s["cgroup"] == unit.display().to_string())?;
        let id = s["id"].as_str()?.to_owned();
        argvs(&d, &id).iter().any(|a| a.first().is_some_and(|c| c == "cat")).then_some(s)
    });
    assert_eq!(first["source"], "unit", "{first}");
    assert_eq!(first["agent"], "unit-agent");
    let id1 = first["id"].as_str().expect("id").to_owned();
    let acts = argvs(&d, &id1);
    assert!(acts.iter().any(|a| a == &["cat".to_owned(), f1.display().to_string()]), "{acts:?}");
    let files: Vec<Value> = json_lines(&d.cli(&["actions", "--json", "--session", &id1]));
    assert!(
        files.iter().any(|a| a["files"].to_string().contains(&f1.display().to_string())),
        "the write is recorded: {files:?}"
    );
    assert_eq!(sessions(&d, "unit-agent").len(), 1, "the .scope cgroup is not a session");

    // The unit stops (its cgroup goes) and starts again (a new cgroup of the same name).
    std::fs::remove_dir(&unit).expect("rmdir unit cgroup");
    let ended = d.wait_session_end(&id1);
    assert!(!ended["ended_at"].is_null());
    std::fs::create_dir(&unit).expect("recreate unit cgroup");
    let f2 = dir.join("second");
    run_in(&unit, &format!("echo two > {} && cat {}", f2.display(), f2.display()));
    let second = wait_for(30, "a second unit session", || {
        sessions(&d, "unit-agent")
            .into_iter()
            .find(|s| s["id"] != id1.as_str() && s["cgroup"] == unit.display().to_string())
    });
    assert_eq!(second["source"], "unit");
    let id2 = second["id"].as_str().expect("id").to_owned();
    wait_for(30, "the second session's command", || {
        argvs(&d, &id2).iter().any(|a| a == &["cat".to_owned(), f2.display().to_string()]).then_some(())
    });
    let st = d.status();
    assert_eq!(st["unattributed"], 0, "pending cgroups that matched nothing are not counted as unattributed: {st}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cgroup_rule_adopts_an_existing_cgroup_with_its_processes() {
    let dir = scratch("cgrouprule");
    let mount = cgroup2_mount();
    let parent = mount.join(format!("agentmon-rc-{}", std::process::id()));
    let work = parent.join("work");
    let _cleanup = Cgroups(vec![parent.clone()]);
    std::fs::create_dir_all(&work).expect("mkdir");
    // Running before the daemon starts.
    let mut sleeper = Command::new("sh")
        .args(["-c", &format!("echo $$ > {}/cgroup.procs && exec sleep 60", work.display())])
        .spawn()
        .expect("sleep");
    wait_for(10, "the sleeper in its cgroup", || {
        std::fs::read_to_string(work.join("cgroup.procs")).ok().filter(|t| !t.trim().is_empty())
    });
    let rel = format!("/{}/*", parent.strip_prefix(&mount).expect("under the mount").display());
    let cfg =
        write_config(&dir, &format!("[[rule]]\nagent = \"cg-agent\"\nlabel = \"existing\"\ncgroup = \"{rel}\"\n"));
    let d = Daemon::start("cgrouprule", &["--config", cfg.to_str().expect("utf8")]).await;
    let s = wait_for(30, "the adopted session", || sessions(&d, "cg-agent").into_iter().next());
    assert_eq!(s["source"], "cgroup", "{s}");
    assert_eq!(s["label"], "existing");
    assert_eq!(s["cgroup"], work.display().to_string());
    let st = d.status();
    let live = st["sessions"].as_array().expect("sessions").iter().find(|l| l["id"] == s["id"]).cloned().expect("live");
    assert_eq!(live["processes"], 1, "the running sleep is part of it: {live}");
    // Its parent is not a session (the glob names the children).
    assert_eq!(sessions(&d, "cg-agent").len(), 1);
    // A restart (an upgrade) continues the same session: it lasts as long as its cgroup.
    let mut d = d;
    d.restart();
    let live = d.status()["sessions"].as_array().expect("sessions").iter().any(|l| l["id"] == s["id"]);
    assert!(live, "the session is live after the restart");
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    // The process is gone but the cgroup stays: the session does too, until the cgroup goes.
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(sessions(&d, "cg-agent")[0]["ended_at"].is_null(), "ended while its cgroup exists");
    std::fs::remove_dir(&work).expect("rmdir");
    d.wait_session_end(s["id"].as_str().expect("id"));
    assert_eq!(sessions(&d, "cg-agent").len(), 1, "one session across the restart");
}

#[tokio::test(flavor = "multi_thread")]
async fn exe_rule_records_a_forked_child_that_escapes_its_cgroup() {
    let dir = scratch("exerule");
    std::fs::create_dir_all(dir.join("bin")).expect("bin");
    let agent_path = dir.join("bin/fake-agent");
    std::fs::copy(W, &agent_path).expect("install the program");
    let cfg = write_config(&dir, &format!("[[rule]]\nagent = \"exe-agent\"\nexe = [\"{}\"]\n", agent_path.display()));
    let d = Daemon::start("exerule", &["--config", cfg.to_str().expect("utf8")]).await;
    let mount = cgroup2_mount();
    let away = mount.join(format!("agentmon-rx-{}", std::process::id()));
    let _cleanup = Cgroups(vec![away.clone()]);
    std::fs::create_dir(&away).expect("mkdir");

    // From an untagged shell: the program forks first thing; the child moves itself to another
    // cgroup and execs a shell that writes a file; the parent writes one too.
    let out_file = dir.join("child-wrote");
    let out = Command::new("sh")
        .args(["-c", "\"$@\"", "sh"])
        .arg(&agent_path)
        .args([
            "fork-escape",
            away.to_str().expect("utf8"),
            "/bin/sh",
            "-c",
            "echo child > \"$0\"",
            out_file.to_str().expect("utf8"),
        ])
        .output()
        .expect("run the program");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out_file.exists());

    let s = wait_for(30, "the exe session", || sessions(&d, "exe-agent").into_iter().next());
    assert_eq!(s["source"], "exe", "{s}");
    let id = s["id"].as_str().expect("id").to_owned();
    let ended = d.wait_session_end(&id);
    let acts = argvs(&d, &id);
    assert!(
        acts.iter().any(|a| a.first().is_some_and(|c| c == "/bin/sh") && a.get(2).is_some_and(|c| c.starts_with("echo child"))),
        "the escaped child's exec is in the session: {acts:?}"
    );
    let events = json_lines(&d.cli(&["events", "--json", "--session", &id]));
    let text = serde_json::to_string(&events).expect("json");
    assert!(text.contains(&out_file.display().to_string()), "the child's write is recorded");
    assert!(text.contains(&format!("{}.parent", out_file.display())), "the parent's write is recorded");
    assert_eq!(sessions(&d, "exe-agent").len(), 1, "one session for the program and its child: {ended}");
    // The untagged launching shell is not part of it.
    assert!(!acts.iter().any(|a| a.first().is_some_and(|c| c == "sh")
        && a.get(1).is_some_and(|c| c == "-c")
        && a.get(2).is_some_and(|c| c == "\"$@\"")));
}

#[tokio::test(flavor = "multi_thread")]
async fn exe_rule_matches_inside_a_cgroup_still_pending_for_the_cgroup_rules() {
    let dir = scratch("exepending");
    std::fs::create_dir_all(dir.join("bin")).expect("bin");
    let agent_path = dir.join("bin/fake-agent");
    std::fs::copy(W, &agent_path).expect("install the program");
    let tag = format!("agentmon-rp-{}", std::process::id());
    // A unit rule holds every new cgroup pending; this one matches none of the test's cgroups.
    let cfg = write_config(
        &dir,
        &format!("[[rule]]\nagent = \"pend-agent\"\nexe = [\"{}\"]\n\n[[rule]]\nagent = \"pend-unit\"\nunit = \"{tag}-*.service\"\n", agent_path.display()),
    );
    let d = Daemon::start("exepending", &["--config", cfg.to_str().expect("utf8")]).await;
    let mount = cgroup2_mount();
    let fresh = mount.join(format!("{tag}-fresh.scope"));
    let away = mount.join(format!("{tag}-away.scope"));
    let _cleanup = Cgroups(vec![fresh.clone(), away.clone()]);
    std::fs::create_dir(&away).expect("mkdir");
    // The program runs at once in a cgroup the daemon has not decided yet (then releases).
    std::fs::create_dir(&fresh).expect("mkdir");
    let out_file = dir.join("child-wrote");
    run_in(
        &fresh,
        &format!(
            "exec {} fork-escape {} /bin/sh -c 'echo child > \"$0\"' {}",
            agent_path.display(),
            away.display(),
            out_file.display()
        ),
    );
    assert!(out_file.exists());

    let s = wait_for(30, "the exe session", || sessions(&d, "pend-agent").into_iter().next());
    assert_eq!(s["source"], "exe", "{s}");
    let id = s["id"].as_str().expect("id").to_owned();
    d.wait_session_end(&id);
    let acts = argvs(&d, &id);
    assert!(
        acts.iter().any(|a| a.first().is_some_and(|c| c == "/bin/sh") && a.get(2).is_some_and(|c| c.starts_with("echo child"))),
        "the child is recorded although the cgroup it started in was released: {acts:?}"
    );
    assert!(sessions(&d, "pend-unit").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn unit_rule_keeps_a_cgroup_that_came_and_went_while_no_daemon_ran() {
    let dir = scratch("unitgone");
    let tag = format!("agentmon-rg-{}", std::process::id());
    let cfg = write_config(&dir, &format!("[[rule]]\nagent = \"gone-agent\"\nunit = \"{tag}-*.service\"\n"));
    let mut d = Daemon::start("unitgone", &["--config", cfg.to_str().expect("utf8")]).await;
    let unit = cgroup2_mount().join(format!("{tag}-job.service"));
    let _cleanup = Cgroups(vec![unit.clone()]);
    // The probes stay attached between daemons: the unit runs and is gone before one reads it.
    d.stop();
    std::fs::create_dir(&unit).expect("mkdir unit cgroup");
    let f = dir.join("job");
    run_in(&unit, &format!("echo job > {} && cat {}", f.display(), f.display()));
    std::fs::remove_dir(&unit).expect("rmdir unit cgroup");
    d.start_again(None);
    let s = wait_for(30, "the short-lived unit's session", || sessions(&d, "gone-agent").into_iter().next());
    assert_eq!(s["source"], "unit", "{s}");
    let id = s["id"].as_str().expect("id").to_owned();
    d.wait_session_end(&id);
    let acts = argvs(&d, &id);
    assert!(acts.iter().any(|a| a == &["cat".to_owned(), f.display().to_string()]), "{acts:?}");
}
