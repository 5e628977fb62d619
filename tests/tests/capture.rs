//! Root integration tests: the real daemon and eBPF programs, real processes in a real tagged
//! cgroup, a real `PostgreSQL`. Every assertion is on what was stored, read back via the CLI.

use std::{os::unix::fs::PermissionsExt as _, process::Command};

use integration_tests::{cgroup2_mount, json_lines, scratch, strs, Daemon};
use serde_json::Value;

fn by_argv<'a>(procs: &'a [Value], argv: &[&str]) -> &'a Value {
    procs
        .iter()
        .find(|p| strs(&p["argv"]) == argv)
        .unwrap_or_else(|| panic!("no process with argv {argv:?} in {procs:#?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn session_records_every_command_with_argv_cwd_exit_and_subtree() {
    let d = Daemon::start("session", &[]).await;
    let dir = scratch("session");
    let script = "bash -c 'echo hello | tr a-z A-Z > /dev/null'\n\
                  sh -c 'exit 7'\n\
                  bash -c 'kill -TERM $$'\n\
                  bash -c 'sleep 0.5 & exit 0'\n\
                  /nonexistent-agentmon-cmd\n\
                  exit 3\n";
    let (id, out) = d.run_agent("tester", &dir, &["bash", "-c", script]);
    assert_eq!(out.status.code(), Some(3), "run returns the agent's exit status");

    let session = d.wait_session_end(&id);
    assert_eq!(session["agent"], "tester");
    assert_eq!(session["source"], "run");
    assert_eq!(session["uid"], 0);
    assert_eq!(strs(&session["root_argv"]), ["bash", "-c", script]);
    assert_eq!(session["actions"], 5);
    assert_eq!(session["events_lost"], 0);
    assert!(session["cgroup"].as_str().expect("cgroup").ends_with(&id));

    let actions = d.actions(&id);
    assert_eq!(actions.len(), 5, "{actions:#?}");
    let cwd = dir.to_str().expect("utf8 path");
    for a in &actions {
        assert_eq!(a["session_id"], id.as_str());
        assert_eq!(a["cwd"], cwd, "cwd of {}", a["command"]);
        assert_eq!(a["uid"], 0);
        assert_eq!(a["agent"], "tester");
        assert_eq!(a["complete"], true);
        assert!(a["duration_ms"].as_i64().expect("duration") >= 0);
    }

    // A pipeline: one action whose subtree holds the pipeline's processes.
    let pipe = &actions[0];
    assert_eq!(strs(&pipe["argv"]), ["bash", "-c", "echo hello | tr a-z A-Z > /dev/null"]);
    assert_eq!(pipe["command"], "bash -c 'echo hello | tr a-z A-Z > /dev/null'");
    assert_eq!(pipe["exit_code"], 0);
    assert!(pipe["signal"].is_null());
    assert!(pipe["exe"].as_str().expect("exe").ends_with("/bash"));
    let procs = pipe["processes"].as_array().expect("processes");
    assert_eq!(procs.len(), 3, "bash, its echo subshell and tr: {procs:#?}");
    assert_eq!(procs[0]["pid"], pipe["pid"], "the action's own process comes first");
    let tr = by_argv(procs, &["tr", "a-z", "A-Z"]);
    assert_eq!(tr["ppid"], pipe["pid"]);
    assert_eq!(tr["exit_code"], 0);
    assert_eq!(tr["cwd"], cwd);
    assert!(tr["exe"].as_str().expect("exe").ends_with("/tr"));

    let fail = &actions[1];
    assert_eq!(strs(&fail["argv"]), ["sh", "-c", "exit 7"]);
    assert_eq!(fail["exit_code"], 7);
    assert!(fail["signal"].is_null());
    assert_eq!(fail["processes"].as_array().expect("procs").len(), 1);

    let killed = &actions[2];
    assert_eq!(strs(&killed["argv"]), ["bash", "-c", "kill -TERM $$"]);
    assert!(killed["exit_code"].is_null());
    assert_eq!(killed["signal"], 15);

    let bg = &actions[3];
    assert_eq!(strs(&bg["argv"]), ["bash", "-c", "sleep 0.5 & exit 0"]);
    assert_eq!(bg["exit_code"], 0);
    let procs = bg["processes"].as_array().expect("procs");
    assert_eq!(procs.len(), 2);
    let sleep = by_argv(procs, &["sleep", "0.5"]);
    assert_eq!(sleep["ppid"], bg["pid"]);
    assert_eq!(sleep["exit_code"], 0);
    let parent_end = chrono::DateTime::parse_from_rfc3339(bg["ended_at"].as_str().expect("end")).expect("time");
    let child_end = chrono::DateTime::parse_from_rfc3339(sleep["ended_at"].as_str().expect("end")).expect("time");
    assert!(child_end - parent_end > chrono::Duration::milliseconds(300), "the background child outlived its parent");

    let missing = &actions[4];
    assert_eq!(strs(&missing["argv"]), ["/nonexistent-agentmon-cmd"]);
    assert_eq!(missing["exit_code"], 127);
    let events: Vec<(String, Value)> = sqlx::query_as("SELECT kind, data FROM events WHERE action_id = $1::text::uuid")
        .bind(missing["id"].as_str().expect("id"))
        .fetch_all(&d.pool)
        .await
        .expect("events");
    assert!(
        events
            .iter()
            .any(|(k, v)| k == "exec_failed" && v["error"] == "ENOENT" && v["filename"] == "/nonexistent-agentmon-cmd"),
        "{events:#?}"
    );

    // `show` draws the tree; an unknown id exits 1.
    let show = d.cli(&["show", pipe["id"].as_str().expect("id")]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(show.status.success() && text.contains("tr a-z A-Z") && text.contains("└─"), "{text}");
    assert_eq!(d.cli(&["show", "ffffffff"]).status.code(), Some(1));
    // Filters.
    let failed = json_lines(&d.cli(&["actions", "--json", "--session", &id, "--failed"]));
    assert_eq!(failed.len(), 3, "exit 7, SIGTERM and 127");
    let grep = json_lines(&d.cli(&["actions", "--json", "--grep", "A-Z"]));
    assert_eq!(grep.len(), 1);
    let limited = json_lines(&d.cli(&["actions", "--json", "--limit", "2"]));
    assert_eq!(strs(&limited[1]["argv"]), ["/nonexistent-agentmon-cmd"], "--limit keeps the most recent");

    // The evidence is append-only, even for the daemon's own database user.
    for sql in [
        "UPDATE actions SET exit_code = 0",
        "DELETE FROM events",
        "UPDATE sessions SET agent = 'x'",
        "DELETE FROM session_ends",
        "TRUNCATE processes",
        "TRUNCATE events CASCADE",
    ] {
        let err = sqlx::query(sql).execute(&d.pool).await.expect_err(sql).to_string();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn processes_outside_the_session_are_not_recorded() {
    let d = Daemon::start("outside", &[]).await;
    let dir = scratch("outside");
    let marker = format!("outside-marker-{}", std::process::id());
    let mut outside = Command::new("bash")
        .args(["-c", &format!("for i in 1 2 3 4 5; do /bin/echo {marker} > /dev/null; sleep 0.1; done")])
        .spawn()
        .expect("outside process");
    let (id, out) = d.run_agent(
        "tester",
        &dir,
        &["bash", "-c", "for i in 1 2 3; do /bin/echo inside > /dev/null; sleep 0.1; done"],
    );
    assert!(out.status.success());
    outside.wait().expect("outside");
    d.wait_session_end(&id);
    let actions = d.actions(&id);
    assert_eq!(actions.len(), 6, "3 echo + 3 sleep: {actions:#?}");
    let leaked: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE data::text LIKE '%' || $1 || '%'")
        .bind(&marker)
        .fetch_one(&d.pool)
        .await
        .expect("count");
    assert_eq!(leaked, 0, "events from outside the session were stored");
    let any: i64 =
        sqlx::query_scalar("SELECT count(*) FROM processes WHERE array_to_string(argv, ' ') LIKE '%' || $1 || '%'")
            .bind(&marker)
            .fetch_one(&d.pool)
            .await
            .expect("count");
    assert_eq!(any, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_that_leaves_its_cgroup_is_still_recorded() {
    let d = Daemon::start("escape", &[]).await;
    let dir = scratch("escape");
    let root_procs = cgroup2_mount().join("cgroup.procs");
    let script = format!(
        "bash -c 'echo $$ > {}; grep ^0:: /proc/self/cgroup > {}/where; /bin/echo escaped-marker; true'; exit 0",
        root_procs.display(),
        dir.display()
    );
    let (id, out) = d.run_agent("tester", &dir, &["bash", "-c", &script]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(dir.join("where")).expect("where").trim(), "0::/", "the process really left");
    d.wait_session_end(&id);
    let actions = d.actions(&id);
    assert_eq!(actions.len(), 1);
    let procs = actions[0]["processes"].as_array().expect("procs");
    let echo = by_argv(procs, &["/bin/echo", "escaped-marker"]);
    assert_eq!(echo["ppid"], actions[0]["pid"]);
    assert_eq!(echo["exit_code"], 0);
    // The exec happened outside the session cgroup, and was attributed to the session anyway.
    let (cg, session_cg): (String, i64) = sqlx::query_as(
        "SELECT e.data->>'cgroup_id', s.cgroup_id FROM events e JOIN sessions s ON s.id = e.session_id \
         WHERE e.kind = 'exec' AND e.data->'argv' = '[\"/bin/echo\", \"escaped-marker\"]'::jsonb",
    )
    .fetch_one(&d.pool)
    .await
    .expect("escaped exec event");
    assert_ne!(cg, session_cg.to_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_argv_longer_than_the_cap_is_truncated_and_flagged() {
    let d = Daemon::start("argv", &[]).await;
    let dir = scratch("argv");
    let long = "a".repeat(20_000);
    // Each command is followed by more script, so bash forks for it rather than exec'ing.
    let script = format!("/bin/true {long}; /bin/true 'odd  arg' $'x\\xffy' ''; exit 0");
    let (id, out) = d.run_agent("tester", &dir, &["bash", "-c", &script]);
    assert!(out.status.success());
    d.wait_session_end(&id);
    let actions = d.actions(&id);
    assert_eq!(actions.len(), 2);
    let a = &actions[0];
    assert_eq!(a["argv_truncated"], true);
    let argv = strs(&a["argv"]);
    assert_eq!(argv[0], "/bin/true");
    // 16383 captured bytes: "/bin/true\0" (10) + 16373 bytes of the long argument.
    assert_eq!(argv[1].len(), 16_373);
    assert!(argv[1].bytes().all(|b| b == b'a'));
    let full: i64 = sqlx::query_scalar(
        "SELECT (data->>'argv_bytes')::bigint FROM events WHERE action_id = $1::text::uuid AND kind = 'exec'",
    )
    .bind(a["id"].as_str().expect("id"))
    .fetch_one(&d.pool)
    .await
    .expect("exec event");
    assert_eq!(full, 10 + 20_001, "the true length is kept");
    // Odd argv: spaces, an empty argument and a non-UTF-8 byte, stored losslessly escaped.
    let b = &actions[1];
    assert_eq!(b["argv_truncated"], false);
    assert_eq!(strs(&b["argv"]), ["/bin/true", "odd  arg", "x\\xffy", ""]);
    assert_eq!(b["command"], "/bin/true 'odd  arg' 'x\\xffy' ''");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permitted_non_root_user_can_run_sessions_and_others_cannot() {
    let (user, group) = integration_tests::test_user();
    let uid: i64 = String::from_utf8_lossy(&Command::new("id").args(["-u", user]).output().expect("id").stdout)
        .trim()
        .parse()
        .expect("uid");
    let d = Daemon::start("nonroot", &["--group", group]).await;
    let dir = scratch("nonroot");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    // The user must be able to execute agentmon wherever the checkout lives (e.g. under /root).
    let bin_dir = std::path::PathBuf::from(format!("/tmp/agentmon-test-bin-{}", std::process::id()));
    std::fs::create_dir_all(&bin_dir).expect("bin dir");
    std::fs::set_permissions(&bin_dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let bin = bin_dir.join("agentmon");
    std::fs::copy(integration_tests::bin(), &bin).expect("copy agentmon");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let run_as = |who: &str| {
        Command::new("runuser")
            .args(["-u", who, "--"])
            .arg(&bin)
            .args(["run", "--agent", "nonroot", "--runtime-dir"])
            .arg(&d.runtime_dir)
            .args(["--", "sh", "-c", "/usr/bin/id -u; exit 0"])
            .current_dir(&dir)
            .output()
            .expect("runuser")
    };
    let out = run_as(user);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), uid.to_string());
    let id = stderr.lines().find_map(|l| l.strip_prefix("agentmon: session ")).expect("session line").trim().to_owned();
    let s = d.wait_session_end(&id);
    assert_eq!(s["uid"], uid, "the session records the caller's uid, from the socket");
    let actions = d.actions(&id);
    assert_eq!(actions.len(), 1);
    assert_eq!(strs(&actions[0]["argv"]), ["/usr/bin/id", "-u"]);
    assert_eq!(actions[0]["uid"], uid);

    let refused = run_as("nobody");
    let _ = std::fs::remove_dir_all(&bin_dir);
    assert_eq!(refused.status.code(), Some(125));
    let msg = String::from_utf8_lossy(&refused.stderr);
    // The socket is group-owned 0660, so the kernel refuses the connection itself.
    assert!(
        msg.starts_with("agentmon: permission denied on") && msg.contains("members of the daemon's group"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tagging_an_existing_cgroup_adopts_its_running_processes() {
    let d = Daemon::start("tag", &[]).await;
    let cg = cgroup2_mount().join(format!("agentmon-tagtest-{}", std::process::id()));
    std::fs::create_dir_all(&cg).expect("cgroup");
    let dir = scratch("tag");
    let flag = dir.join("go");
    // An "agent" already running in the cgroup before it is tagged; it waits for a flag file.
    let mut agent = Command::new("bash")
        .args([
            "-c",
            &format!(
                "echo $$ > {}/cgroup.procs; while [ ! -e {} ]; do sleep 0.05; done; /bin/echo tagged-child; exit 0",
                cg.display(),
                flag.display()
            ),
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("agent");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = d.cli(&["tag", "--cgroup", cg.to_str().expect("path"), "--agent", "svc"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let id = stderr
        .lines()
        .find_map(|l| l.strip_prefix("agentmon: session "))
        .expect("session")
        .split(' ')
        .next()
        .expect("id")
        .to_owned();
    std::fs::write(&flag, "").expect("flag");
    agent.wait().expect("agent");
    let s = d.wait_session_end(&id);
    assert_eq!(s["source"], "tag");
    assert_eq!(s["root_pid"], agent.id());
    let actions = d.actions(&id);
    assert!(actions.iter().any(|a| strs(&a["argv"]) == ["/bin/echo", "tagged-child"]), "{actions:#?}");
    let _ = std::fs::remove_dir(&cg);
    // Tagging something that is not a cgroup is a clear error.
    let bad = d.cli(&["tag", "--cgroup", "/no/such/cgroup", "--agent", "svc"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a cgroup2 directory"));
}

#[tokio::test(flavor = "multi_thread")]
async fn status_reports_capture_and_bad_input_gets_one_line_errors() {
    let d = Daemon::start("status", &[]).await;
    let st = json_lines(&d.cli(&["status", "--json"]));
    assert_eq!(st.len(), 1);
    assert_eq!(st[0]["capturing"], true);
    assert!(st[0]["probes"].as_array().expect("probes").iter().any(|p| p == "raw_tp/sched_process_exec"));
    assert_eq!(st[0]["events_dropped"], 0);
    // Nothing capturing at another runtime dir: status exits 1, run refuses with 125.
    let none = Command::new(integration_tests::bin())
        .args(["status", "--runtime-dir", "/nonexistent-agentmon"])
        .output()
        .expect("status");
    assert_eq!(none.status.code(), Some(1));
    let run = Command::new(integration_tests::bin())
        .args(["run", "--agent", "x", "--runtime-dir", "/nonexistent-agentmon", "--", "true"])
        .output()
        .expect("run");
    assert_eq!(run.status.code(), Some(125));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.starts_with("agentmon: no daemon is capturing") && err.trim().lines().count() == 1, "{err}");
    // An unreachable database.
    let bad_db = Command::new(integration_tests::bin())
        .args(["sessions", "--database-url", "postgres://postgres@localhost/x?host=/nonexistent&port=1"])
        .output()
        .expect("sessions");
    assert_eq!(bad_db.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad_db.stderr);
    assert!(err.contains("cannot connect to the database") && err.trim().lines().count() == 1, "{err}");
    // A bad flag value.
    let bad_flag = d.cli(&["actions", "--since", "yesterday"]);
    assert_eq!(bad_flag.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_flag.stderr).contains("is not a time"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_daemon_adopts_running_sessions_from_proc() {
    let mut d = Daemon::start("restart", &[]).await;
    let dir = scratch("restart");
    let flag = dir.join("go");
    let script = format!(
        "/bin/echo before-restart; while [ ! -e {} ]; do sleep 0.05; done; /bin/echo after-restart; exit 0",
        flag.display()
    );
    let bin = integration_tests::bin();
    let child = std::process::Command::new(&bin)
        .args(["run", "--agent", "tester", "--runtime-dir"])
        .arg(&d.runtime_dir)
        .args(["--", "bash", "-c", &script])
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    // Let the first command finish under the first daemon, then restart it.
    std::thread::sleep(std::time::Duration::from_millis(700));
    d.restart();
    std::fs::write(&flag, "").expect("flag");
    let out = child.wait_with_output().expect("agent");
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let id = stderr.lines().find_map(|l| l.strip_prefix("agentmon: session ")).expect("session").trim().to_owned();
    let session = d.wait_session_end(&id);
    assert_eq!(session["root_pid"], out_root_pid(&d, &id).await);
    let actions = d.actions(&id);
    let argvs: Vec<Vec<String>> = actions.iter().map(|a| strs(&a["argv"])).collect();
    assert!(argvs.contains(&vec!["/bin/echo".to_owned(), "before-restart".to_owned()]), "{argvs:?}");
    assert!(
        argvs.contains(&vec!["/bin/echo".to_owned(), "after-restart".to_owned()]),
        "the new daemon kept capturing: {argvs:?}"
    );
    assert!(d.log().contains("continuing from the last daemon's handoff"), "{}", d.log());
    // One ordered timeline across both daemons: seq continues, it does not restart.
    let (n, distinct, max): (i64, i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT seq), max(seq) FROM events WHERE session_id = $1::text::uuid")
            .bind(&id)
            .fetch_one(&d.pool)
            .await
            .expect("seq");
    assert_eq!(n, distinct, "no seq is used twice");
    assert_eq!(max, session["events"].as_i64().expect("events"), "the end record counts the whole session");
    assert_eq!(session["actions"].as_i64(), Some(actions.len() as i64));
}

/// The session's agent pid, from its first exec event.
async fn out_root_pid(d: &Daemon, id: &str) -> Value {
    let pid: i64 = sqlx::query_scalar(
        "SELECT pid FROM events WHERE session_id = $1::text::uuid AND kind = 'exec' ORDER BY seq LIMIT 1",
    )
    .bind(id)
    .fetch_one(&d.pool)
    .await
    .expect("first exec");
    Value::from(pid)
}
