//! Nodes learn of each other's changes: through `NOTIFY` on PostgreSQL, within a second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_control::model::NewDomain;
use tollgate_control::{Actor, Backend, ControlPlane};

use crate::support::TestDb;

#[tokio::test]
async fn a_change_on_one_node_reaches_another_through_notify() {
    let test = TestDb::new(Backend::Postgres);
    let writer = test.control().await;
    let reader = Arc::new(ControlPlane::new(test.connect().await).await.unwrap());
    let follower = tokio::spawn(tollgate_control::follow::follow(reader.clone()));
    let mut revisions = reader.revisions();
    let start = *revisions.borrow_and_update();
    // Let the listener start (it re-reads the revision once it listens).
    tokio::time::sleep(Duration::from_millis(300)).await;

    let sent = Instant::now();
    writer
        .create_domain(
            &NewDomain {
                name: "n".into(),
                description: String::new(),
            },
            &Actor::unauthenticated_admin("test"),
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(1), revisions.wait_for(|r| *r > start))
        .await
        .expect("the reader hears of the change within 1 s (the poll backstop is 5 s)")
        .unwrap();
    eprintln!(
        "notification reached the other node in {:?}",
        sent.elapsed()
    );
    follower.abort();
}
