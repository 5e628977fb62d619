//! Root integration test for DNS trust: an answer names a later connect only when it answers a
//! query the same session sent, with the same id and question, from the server asked.

use std::process::{Command, Stdio};

use integration_tests::{json_lines, scratch, Daemon, Netns};
use serde_json::Value;

const W: &str = env!("CARGO_BIN_EXE_agentmon-workload");

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_answer_does_not_name_a_connect_and_a_real_lookup_does() {
    let d = Daemon::start("dnstrust", &[]).await;
    let dir = scratch("dnstrust");
    let ns = Netns::with_resolver(&format!("agentmon-dnstrust-{}", std::process::id()));
    let spawn = |args: &[&str]| {
        Command::new("ip").args(["netns", "exec", &ns.0, W]).args(args).stdout(Stdio::null()).spawn().expect("server")
    };
    let mut dns = spawn(&["dns-server", "20"]);
    let mut tcp = spawn(&["tcp-server", "127.0.0.2:8080", "20"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    // First the unsolicited answer (forged.test -> 127.0.0.9, from 127.0.0.3:53) and a connect
    // to 127.0.0.9 (refused: nothing listens), then a real lookup of svc.agentmon.test.
    let script =
        format!("{W} forged-dns 127.0.0.3:53 forged.test 127.0.0.9 8080; {W} resolve svc.agentmon.test 8080; exit 0");
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
    assert_eq!(actions.len(), 2, "{actions:#?}");
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
}
