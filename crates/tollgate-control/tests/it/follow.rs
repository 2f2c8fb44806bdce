//! Nodes learn of each other's changes through `NOTIFY` on PostgreSQL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_control::model::NewDomain;
use tollgate_control::{Actor, Backend, ControlPlane};
use tollgate_testkit::wait;

use crate::support::TestDb;

#[tokio::test]
async fn a_change_on_one_node_reaches_another_through_notify() {
    let test = TestDb::new(Backend::Postgres);
    let writer = test.control().await;
    let reader = Arc::new(ControlPlane::new(test.connect().await).await.unwrap());
    // The backstop poll is set far beyond the test, so only a notification can bring the
    // change.
    let follower = tokio::spawn(tollgate_control::follow::follow_polling_every(
        reader.clone(),
        Duration::from_secs(3_600),
    ));
    let mut revisions = reader.revisions();
    let start = *revisions.borrow_and_update();
    // The event itself: the reader's connection has run LISTEN on this database.
    let observer = sqlx::PgPool::connect(&test.url).await.expect("observer");
    wait::until("the reader listens for policy changes", || async {
        let listening: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
        )
        .fetch_one(&observer)
        .await
        .expect("pg_stat_activity");
        (listening > 0).then_some(())
    })
    .await;

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
    wait::finishes(
        "the reader hears of the change",
        revisions.wait_for(|r| *r > start),
    )
    .await
    .unwrap();
    eprintln!(
        "notification reached the other node in {:?}",
        sent.elapsed()
    );
    follower.abort();
}
