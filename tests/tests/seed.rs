//! Root integration test of the `agent_audit_log` view: a real session of a known agent, then
//! each of the README's seed queries, as written there, against a real database, as the
//! reader role, with the rows it must return.

use integration_tests::{scratch, Daemon};
use serde_json::{json, Value};

/// The `sql` blocks of the README's seed-query section, in order.
fn readme_queries() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README.md");
    let start = readme.find("<!-- seed-queries:").expect("the README's seed-query marker");
    let section = &readme[start..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    section.split("```sql\n").skip(1).map(|b| b.split("```").next().expect("block").trim().to_owned()).collect()
}

/// Run `sql` unchanged as the reader role, then its rows as JSON objects in its order.
async fn rows(pool: &sqlx::PgPool, sql: &str) -> Vec<Value> {
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("SET LOCAL ROLE agentmon_reader").execute(&mut *tx).await.expect("set role");
    sqlx::raw_sql(sql)
        .execute(&mut *tx)
        .await
        .unwrap_or_else(|e| panic!("the README query fails as written: {e}\n{sql}"));
    let body = sql.trim_end_matches(';');
    let wrapped = format!("SELECT coalesce(json_agg(q), '[]')::text FROM ({body}) q");
    let text: String =
        sqlx::query_scalar(&wrapped).fetch_one(&mut *tx).await.unwrap_or_else(|e| panic!("{e}\n{wrapped}"));
    tx.rollback().await.expect("rollback");
    serde_json::from_str::<Value>(&text).expect("json").as_array().expect("array").clone()
}

fn pick(rows: &[Value], keys: &[&str]) -> Vec<Value> {
    rows.iter().map(|r| Value::Array(keys.iter().map(|k| r[*k].clone()).collect())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_queries_run_unchanged_on_the_view_and_return_the_sessions_rows() {
    let queries = readme_queries();
    assert_eq!(queries.len(), 5, "recent activity, failed actions, cost, security audit, outcomes: {queries:#?}");
    let dir = scratch("seed");
    std::fs::write(dir.join(".env"), "X=1\n").expect(".env");
    let mut script = String::new();
    for _ in 0..11 {
        script += "/bin/true\n/bin/false\n";
    }
    script += "cat .env > /dev/null\nls > /dev/null\nexit 0\n";
    std::fs::write(dir.join("agent.sh"), script).expect("script");
    let d = Daemon::start("seed", &[]).await;
    let (id, out) = d.run_agent("ops/release-manager", &dir, &["/bin/sh", "agent.sh"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let session = d.wait_session_end(&id);
    assert_eq!(session["actions"], 24, "{session}");
    let env_path = dir.join(".env").display().to_string();

    // Recent activity by agent: every action, newest first.
    let recent = rows(&d.pool, &queries[0]).await;
    assert_eq!(recent.len(), 24, "{recent:#?}");
    let (mut t, mut f) = (0, 0);
    for r in &recent {
        assert_eq!(r["action_type"], "command", "{r}");
        match r["action_name"].as_str().expect("name") {
            "true" => {
                t += 1;
                assert_eq!(r["outcome_status"], "success", "{r}");
            }
            "false" => {
                f += 1;
                assert_eq!(r["outcome_status"], "failure", "{r}");
            }
            "cat" | "ls" => assert_eq!(r["outcome_status"], "success", "{r}"),
            other => panic!("unexpected action {other}: {r}"),
        }
    }
    assert_eq!((t, f), (11, 11));
    assert_eq!(recent[0]["action_name"], "ls", "newest first");
    let times: Vec<&str> = recent.iter().map(|r| r["timestamp"].as_str().expect("timestamp")).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");

    // Failed actions: the eleven `false`, with the error.
    let failed = rows(&d.pool, &queries[1]).await;
    assert_eq!(failed.len(), 11, "{failed:#?}");
    for r in &failed {
        assert_eq!(
            pick(std::slice::from_ref(r), &["agent_id", "action_name", "outcome_error"])[0],
            json!(["ops/release-manager", "false", {"exit_code": 1, "message": "exit status 1"}]),
            "{r}"
        );
    }

    // Cost analysis: one group per day, cost and tokens null (nothing supplies them).
    let cost = rows(&d.pool, &queries[2]).await;
    assert!(!cost.is_empty() && cost.len() <= 2, "a day, or two across midnight: {cost:#?}");
    assert_eq!(cost.iter().map(|r| r["action_count"].as_i64().expect("count")).sum::<i64>(), 24);
    for r in &cost {
        assert_eq!(
            (&r["agent_id"], &r["total_cost"], &r["total_tokens"]),
            (&json!("ops/release-manager"), &Value::Null, &Value::Null),
            "{r}"
        );
    }

    // Security audit: the one action that read a sensitive file, with what it touched.
    let audit = rows(&d.pool, &queries[3]).await;
    assert_eq!(pick(&audit, &["agent_id", "action_name"]), [json!(["ops/release-manager", "cat"])], "{audit:#?}");
    let files = audit[0]["resources_accessed"]["files"].as_array().expect("files");
    assert!(files.iter().any(|f| f["path"] == env_path.as_str() && f["sensitive"] == true), "{files:#?}");
    assert!(audit[0]["resources_accessed"]["net"].is_array());

    // Action outcomes: programs run more than ten times, the least successful first.
    let outcomes = rows(&d.pool, &queries[4]).await;
    assert_eq!(
        pick(&outcomes, &["agent_id", "action_name", "total", "successes", "success_rate"]),
        [json!(["ops/release-manager", "false", 11, 0, 0.0]), json!(["ops/release-manager", "true", 11, 11, 100.0])],
        "{outcomes:#?}"
    );
}
