//! Root integration test for DNS trust: an answer names a later connect only when it answers a
//! query the same session sent, with the same id and question, from the server asked, and that
//! server is one of the host's resolvers (here the network namespace's, given to the daemon as
//! its `resolv.conf`).

use std::process::{Command, Stdio};

use integration_tests::{json_lines, scratch, Daemon, Netns};
use serde_json::Value;

const W: &str = env!("CARGO_BIN_EXE_agentmon-workload");

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_answer_does_not_name_a_connect_and_a_real_lookup_does() {
    let ns = Netns::with_resolver(&format!("agentmon-dnstrust-{}", std::process::id()));
    let dir = scratch("dnstrust");
    // `unlisted_host` allows the names the agent claims: only a believed name may pass it.
    let cfg = dir.join("agentmon.toml");
    std::fs::write(&cfg, "[alerts]\nallow_hosts = [\"*.github.com\", \"svc.agentmon.test\", \"forged.test\"]\n")
        .expect("config");
    let d =
        Daemon::start("dnstrust", &["--resolv-conf", &ns.resolv_conf(), "--config", cfg.to_str().expect("utf8")]).await;
    let spawn = |args: &[&str]| {
        Command::new("ip").args(["netns", "exec", &ns.0, W]).args(args).stdout(Stdio::null()).spawn().expect("server")
    };
    let mut dns = spawn(&["dns-server", "20"]);
    let mut tcp = spawn(&["tcp-server", "127.0.0.2:8080", "20"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    // First the unsolicited answer (forged.test -> 127.0.0.9, from 127.0.0.3:53) and a connect
    // to 127.0.0.9 (refused: nothing listens), then a real lookup of svc.agentmon.test.
    // Then the agent's own resolver on 127.0.0.2:53 answers its own query for api.github.com
    // with 203.0.113.66, and it connects there (unreachable in the namespace).
    let script = format!(
        "{W} forged-dns 127.0.0.3:53 forged.test 127.0.0.9 8080; {W} resolve svc.agentmon.test 8080; \
         {W} own-resolver 127.0.0.2:53 api.github.com 203.0.113.66 443; exit 0"
    );
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(integration_tests::bin())
        .args(["run", "--agent", "dnstrust", "--runtime-dir"])
        .arg(&d.runtime_dir)
        .args(["--", "bash", "-c", &script])
        .current_dir(&dir)
        .output()
        .expect("run");
    let _ = dns.kill();
    let _ = tcp.kill();
    let _ = (dns.wait(), tcp.wait());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "127.0.0.2", "the real lookup worked");
    let id = stderr.lines().find_map(|l| l.strip_prefix("agentmon: session ")).expect("session").trim().to_owned();
    d.wait_session_end(&id);

    let actions = d.actions(&id);
    assert_eq!(actions.len(), 3, "{actions:#?}");
    let net: Vec<&Value> = actions.iter().flat_map(|a| a["net"].as_array().expect("net")).collect();
    let connect_to = |addr: &str| {
        *net.iter()
            .find(|n| n["op"] == "connect" && n["addr"] == addr)
            .unwrap_or_else(|| panic!("no connect to {addr} in {net:#?}"))
    };
    let forged = connect_to("127.0.0.9");
    assert_eq!((&forged["port"], &forged["result"]), (&Value::from(8080), &Value::from("ECONNREFUSED")));
    assert!(forged["host"].is_null(), "an answer nobody asked for names nothing: {forged}");
    let real = connect_to("127.0.0.2");
    assert_eq!(
        (&real["host"], &real["result"]),
        (&Value::from("svc.agentmon.test"), &Value::from("ok")),
        "a real lookup still names its connect"
    );

    let events = json_lines(&d.cli(&["events", "--json", "--session", &id, "--kind", "net"]));
    let data: Vec<&Value> = events.iter().map(|e| &e["data"]).collect();
    let forged_recv = data
        .iter()
        .find(|e| e["op"] == "recv" && e["dns"]["queries"] == serde_json::json!(["forged.test"]))
        .unwrap_or_else(|| panic!("the forged answer is kept in the raw events: {data:#?}"));
    assert_eq!(
        (&forged_recv["dns"]["trusted"], &forged_recv["dns"]["id"]),
        (&Value::from(false), &Value::from(0x4242))
    );
    assert_eq!(
        (&forged_recv["dns"]["answers"][0]["addr"], &forged_recv["dns"]["answers"][0]["trusted"]),
        (&Value::from("127.0.0.9"), &Value::from(false))
    );
    assert_eq!((&forged_recv["addr"], &forged_recv["port"]), (&Value::from("127.0.0.3"), &Value::from(53)));
    let real_recv = data
        .iter()
        .find(|e| {
            e["op"] == "recv"
                && e["dns"]["queries"] == serde_json::json!(["svc.agentmon.test"])
                && e["dns"]["answers"][0]["addr"] == "127.0.0.2"
        })
        .unwrap_or_else(|| panic!("the real answer: {data:#?}"));
    assert_eq!(real_recv["dns"]["trusted"], true, "{real_recv}");
    let real_query = data
        .iter()
        .find(|e| e["op"] == "send" && e["dns"]["queries"] == serde_json::json!(["svc.agentmon.test"]))
        .unwrap_or_else(|| panic!("the real query: {data:#?}"));
    assert_eq!(
        (&real_query["dns"]["id"], &real_query["dns"]["response"]),
        (&real_recv["dns"]["id"], &Value::from(false))
    );
    assert!(
        json_lines(&d.cli(&["actions", "--json", "--host", "forged.test"])).is_empty(),
        "no action is found under the forged name"
    );

    own_resolver_names_nothing(&d, &id, &net, &data);
}

/// The agent's own resolver: its answer matched its query, but names nothing, and the connect
/// to the address it claimed is an `unlisted_host` alert.
fn own_resolver_names_nothing(d: &Daemon, id: &str, net: &[&Value], data: &[&Value]) {
    let own = *net
        .iter()
        .find(|n| n["op"] == "connect" && n["addr"] == "203.0.113.66")
        .unwrap_or_else(|| panic!("no connect to 203.0.113.66 in {net:#?}"));
    assert!(own["host"].is_null(), "an answer from a resolver the host does not use names nothing: {own}");
    let own_recv = data
        .iter()
        .find(|e| e["op"] == "recv" && e["dns"]["queries"] == serde_json::json!(["api.github.com"]))
        .unwrap_or_else(|| panic!("the own resolver's answer is kept in the raw events: {data:#?}"));
    assert_eq!(
        (&own_recv["dns"]["trusted"], &own_recv["dns"]["answers"][0]["trusted"], &own_recv["port"]),
        (&Value::from(false), &Value::from(false), &Value::from(53))
    );
    assert!(
        json_lines(&d.cli(&["actions", "--json", "--host", "api.github.com"])).is_empty(),
        "no action is found under the claimed name"
    );
    let alerts = json_lines(&d.cli(&["alerts", "--json", "--session", id, "--rule", "unlisted_host"]));
    assert!(
        alerts.iter().any(|a| a["details"].to_string().contains("203.0.113.66")),
        "the connect to an unnamed address is not on the allowlist: {alerts:#?}"
    );
    assert!(
        !alerts.iter().any(|a| a["details"].to_string().contains("127.0.0.2")),
        "the real lookup's name is allowed: {alerts:#?}"
    );
}
