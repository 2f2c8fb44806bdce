//! The transactional outbox on both databases: each change writes its events in its own
//! transaction (and a refused one only its audit event), a relay marks rows sent only
//! after its publisher succeeded, and on PostgreSQL two relays at once publish every row
//! once, each domain's rows in order.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tollgate_control::model::NewDomain;
use tollgate_control::outbox::OutboxEvent;
use tollgate_control::{Actor, Backend, ControlPlane, Precondition};

use crate::support::{BACKENDS, TestDb, per_minute};

fn admin() -> Actor {
    Actor::unauthenticated_admin("test")
}

async fn create(control: &ControlPlane, name: &str) {
    control
        .create_domain(
            &NewDomain {
                name: name.into(),
                description: String::new(),
            },
            &admin(),
        )
        .await
        .expect("create domain");
}

/// One relay pass of up to `batch` rows whose publisher appends each row to `sink`.
async fn relay_into(
    control: &ControlPlane,
    batch: i64,
    sink: &Arc<Mutex<Vec<OutboxEvent>>>,
) -> tollgate_control::outbox::RelayPass {
    control
        .relay_outbox(batch, |e| {
            sink.lock().expect("sink").push(e);
            async { Ok(()) }
        })
        .await
        .expect("relay")
}

/// Every unsent row, published into a vector by one relay pass after another.
async fn drain(control: &ControlPlane) -> Vec<OutboxEvent> {
    let out = Arc::new(Mutex::new(Vec::new()));
    loop {
        let pass = relay_into(control, 100, &out).await;
        if pass.published == 0 {
            break;
        }
    }
    let events: Vec<OutboxEvent> = out.lock().expect("sink").drain(..).collect();
    events
}

#[tokio::test]
async fn every_change_writes_a_change_and_an_audit_event_and_a_refusal_only_its_audit() {
    for backend in BACKENDS {
        let test = TestDb::new(backend);
        let control = test.control().await;

        create(&control, "api").await;
        control
            .put_policy(
                "api",
                "per_user",
                &per_minute("user", 5),
                Precondition::None,
                &admin(),
            )
            .await
            .expect("put");
        // Refused: the domain exists. Its audit entry is an event; no change event.
        assert!(
            control
                .create_domain(
                    &NewDomain {
                        name: "api".into(),
                        description: String::new()
                    },
                    &admin()
                )
                .await
                .is_err()
        );
        control
            .record_auth_failure("rest", "/v1/admin/domains", "127.0.0.9", "unknown key")
            .await
            .expect("auth failure");

        let events = drain(&control).await;
        let kinds: Vec<(&str, Option<&str>)> = events
            .iter()
            .map(|e| (e.kind.as_str(), e.domain.as_deref()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("audit", Some("api")),
                ("change", Some("api")),
                ("audit", Some("api")),
                ("change", Some("api")),
                ("audit", Some("api")),
                ("audit", None),
            ],
            "{backend:?}"
        );
        let put: serde_json::Value = serde_json::from_str(&events[3].data).expect("json");
        assert_eq!(put["action"], "policy.put");
        assert_eq!(put["target"], "api/per_user");
        assert!(put["revision"].as_i64().is_some(), "{put}");
        let refused: serde_json::Value = serde_json::from_str(&events[4].data).expect("json");
        assert_eq!(refused["outcome"], "conflict");
        assert!(events.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(control.outbox_backlog().await.expect("backlog").rows, 0);
    }
}

#[tokio::test]
async fn a_failing_publisher_leaves_its_row_and_every_later_one_unsent() {
    for backend in BACKENDS {
        let test = TestDb::new(backend);
        let control = test.control().await;
        for name in ["a", "b", "c"] {
            create(&control, name).await;
        }
        let mut calls = 0;
        let pass = control
            .relay_outbox(100, |_| {
                calls += 1;
                let fail = calls == 3;
                async move {
                    if fail {
                        Err("broker down".to_owned())
                    } else {
                        Ok(())
                    }
                }
            })
            .await
            .expect("relay");
        assert_eq!(pass.published, 2, "{backend:?}");
        assert_eq!(pass.deferred, 4);
        assert_eq!(pass.error.as_deref(), Some("broker down"));
        assert_eq!(control.outbox_backlog().await.expect("backlog").rows, 4);
        let rest = drain(&control).await;
        assert_eq!(
            rest.len(),
            4,
            "{backend:?}: the failed row and those after it, once"
        );
        assert_eq!(
            control
                .prune_outbox(-1_000, i64::MAX / 2)
                .await
                .expect("prune"),
            (6, 0)
        );
        create(&control, "d").await;
        assert_eq!(
            control
                .prune_outbox(i64::MAX / 2, -1_000)
                .await
                .expect("prune"),
            (0, 2),
            "unrelayed rows go after their time"
        );
    }
}

#[tokio::test]
async fn two_relays_on_postgres_publish_every_row_once_and_each_domain_in_order() {
    let test = TestDb::new(Backend::Postgres);
    let writer = test.control().await;
    let relays = [test.control().await, test.control().await];
    let published: Arc<Mutex<Vec<OutboxEvent>>> = Arc::default();
    let writing = async {
        for i in 0..60 {
            let domain = format!("d{}", i % 4);
            if i < 4 {
                create(&writer, &domain).await;
            }
            let _ = writer
                .put_policy(
                    &domain,
                    &format!("p{i}"),
                    &per_minute("user", 5),
                    Precondition::None,
                    &admin(),
                )
                .await;
        }
    };
    tokio::join!(
        writing,
        relay_until(&relays[0], &published, 128),
        relay_until(&relays[1], &published, 128)
    );
    let leftover = drain(&relays[0]).await;
    let mut all = published.lock().expect("sink").clone();
    all.extend(leftover);
    let mut ids: Vec<i64> = all.iter().map(|e| e.id).collect();
    let total = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), total, "a row was published twice");
    let written: i64 = sqlx_count(&test).await;
    assert_eq!(total as i64, written, "every row published");
    let mut by_domain: BTreeMap<Option<String>, Vec<i64>> = BTreeMap::new();
    for e in &all {
        by_domain.entry(e.domain.clone()).or_default().push(e.id);
    }
    for (domain, ids) in by_domain {
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "{domain:?} out of order: {ids:?}"
        );
    }
}

/// Relay passes until `expected` rows were published by anyone and none is left (bounded:
/// at most 2,000 passes).
async fn relay_until(
    control: &ControlPlane,
    published: &Arc<Mutex<Vec<OutboxEvent>>>,
    expected: usize,
) {
    for _ in 0..2_000 {
        let pass = relay_into(control, 7, published).await;
        if pass.published == 0 {
            let done = published.lock().expect("sink").len() >= expected;
            if done && control.outbox_backlog().await.expect("backlog").rows == 0 {
                return;
            }
            tokio::task::yield_now().await;
        }
    }
}

async fn sqlx_count(test: &TestDb) -> i64 {
    let db = test.connect().await;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM event_outbox")
        .fetch_one(db.pool())
        .await
        .expect("count");
    db.close().await;
    n
}
