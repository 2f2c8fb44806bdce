//! Two nodes sharing one PostgreSQL policy database: a change made through either node's
//! admin API is enforced by the other (NOTIFY, waited for as an event), and a node whose
//! notification connection dropped catches up.

use std::time::Duration;

use serde_json::json;
use tollgate_testkit::PostgresDatabase;

use crate::admin::wait_for_policy;
use crate::helpers::TestServer;

async fn put(s: &TestServer, domain: &str, name: &str, key: &str) {
    let response = s
        .client
        .put(s.admin_url(&format!("/v1/admin/domains/{domain}/policies/{name}")))
        .json(&json!({"descriptor": [{"key": key}], "rate_limit": {"unit": "second", "requests_per_unit": 0}}))
        .send()
        .await
        .expect("put policy");
    assert!(
        response.status().is_success(),
        "{}",
        response.text().await.unwrap_or_default()
    );
}

#[tokio::test]
async fn a_policy_created_on_one_node_is_enforced_on_another() {
    let db = PostgresDatabase::create();
    let a = TestServer::serve(None, &["--database", db.url()]);
    let b = TestServer::serve(None, &["--database", db.url()]);
    let created = a
        .client
        .post(a.admin_url("/v1/admin/domains"))
        .json(&json!({"name": "edge"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    let mut worst = Duration::ZERO;
    for i in 0..5 {
        let name = format!("p{i}");
        let key = format!("k{i}");
        put(&a, "edge", &name, &key).await;
        let took = wait_for_policy(&b, "edge", &[(&key, "v")], Some(&name)).await;
        worst = worst.max(took);
        let answer = b
            .check_json(&crate::helpers::body("edge", &[&[(&key, "v")]], 1))
            .await;
        assert_eq!(
            answer["allowed"], false,
            "requests_per_unit 0 denies: {answer}"
        );
    }
    eprintln!("REST write on node A → enforced on node B: worst of 5 = {worst:?}");

    // And the other way round.
    put(&b, "edge", "from_b", "kb").await;
    wait_for_policy(&a, "edge", &[("kb", "v")], Some("from_b")).await;
}

#[tokio::test]
async fn a_node_that_lost_its_notification_connection_catches_up() {
    let db = PostgresDatabase::create();
    let a = TestServer::serve(None, &["--database", db.url()]);
    let b = TestServer::serve(None, &["--database", db.url()]);
    a.client
        .post(a.admin_url("/v1/admin/domains"))
        .json(&json!({"name": "edge"}))
        .send()
        .await
        .unwrap();
    // Cut every listening connection (node B's among them) from the server side.
    let conn = tollgate_control::Database::connect(db.url()).await.unwrap();
    let name = db.url().rsplit('/').next().unwrap().to_owned();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN%'",
    )
    .bind(&name)
    .fetch_all(conn.pool())
    .await
    .unwrap();
    assert!(killed.len() >= 2, "both nodes listen: {killed:?}");
    put(&a, "edge", "after_cut", "k").await;
    // The listener reconnects and re-reads the store's revision (the 5 s poll is the
    // backstop; reconnecting should be much faster).
    wait_for_policy(&b, "edge", &[("k", "v")], Some("after_cut")).await;
    b.log_line("re-reading the store").await;
}
