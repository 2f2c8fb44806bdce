//! Migrations: applied in order to an empty database and to one seeded at every earlier
//! version, with the data surviving; status, dry run, refusal of unknown schemas, and two
//! nodes migrating at once.

use tollgate_control::migrations::{self, MigrationState};
use tollgate_control::{Actor, Backend, ControlPlane, Precondition};

use crate::support::{BACKENDS, TestDb};

fn versions(backend: Backend) -> Vec<i64> {
    migrations::migrator(backend)
        .iter()
        .map(|m| m.version)
        .collect()
}

#[tokio::test]
async fn every_migration_applies_in_order_to_an_empty_database() {
    for backend in BACKENDS {
        let test = TestDb::new(backend);
        let db = test.connect().await;
        assert!(migrations::is_empty(&db).await.unwrap(), "{backend:?}");
        let before = migrations::status(&db).await.unwrap();
        assert!(
            before.iter().all(|s| s.state == MigrationState::Pending),
            "{before:?}"
        );
        assert!(migrations::require_current(&before).is_err());

        let applied = migrations::up(&db).await.unwrap();
        assert_eq!(applied, versions(backend), "{backend:?}");
        let after = migrations::status(&db).await.unwrap();
        assert!(
            after.iter().all(|s| s.state == MigrationState::Applied),
            "{after:?}"
        );
        migrations::require_current(&after).unwrap();
        // Running again is a no-op.
        assert!(migrations::up(&db).await.unwrap().is_empty());
    }
}

/// Writes data the way the schema at `version` allows, with plain SQL (the code of that
/// release is gone; its schema is what the database holds).
async fn seed(db: &tollgate_control::Database, version: i64) {
    let statements: &[&str] = match version {
        0 => &[],
        _ => &[
            "UPDATE store_revision SET value = 7 WHERE id = 1",
            "INSERT INTO domains (name, description, revision, created_at, updated_at) \
             VALUES ('seeded', 'from an old release', 6, 1000, 2000)",
            r#"INSERT INTO policies (domain, name, spec, revision, created_at, updated_at, updated_by)
               VALUES ('seeded', 'per_user',
               '{"descriptor":[{"key":"user"}],"rate_limit":{"unit":"minute","requests_per_unit":5},"shadow_mode":false,"share_threshold":false,"description":""}',
               7, 1000, 2000, 'old-admin')"#,
            r#"INSERT INTO policy_changes (revision, domain, policy, action, actor, at, after)
               VALUES (7, 'seeded', 'per_user', 'created', 'old-admin', 2000,
               '{"descriptor":[{"key":"user"}],"rate_limit":{"unit":"minute","requests_per_unit":5},"shadow_mode":false,"share_threshold":false,"description":""}')"#,
        ],
    };
    // What each later schema added, written as its release wrote it.
    let later: &[&str] = match version {
        0 | 1 => &[],
        // 2: which interface made a change.
        2 => &[
            r#"INSERT INTO policy_changes (revision, domain, policy, action, actor, at, before, via)
               VALUES (6, 'seeded', 'per_user', 'updated', 'old-editor', 1500, NULL, 'graphql')"#,
        ],
        // 3 and later: API keys and the audit log.
        _ => &[
            r#"INSERT INTO policy_changes (revision, domain, policy, action, actor, at, before, via)
               VALUES (6, 'seeded', 'per_user', 'updated', 'old-editor', 1500, NULL, 'graphql')"#,
            "INSERT INTO api_keys (id, name, role, domains, hash, created_at, created_by) \
             VALUES ('oldkey000000000000ab', 'from an old release', 'viewer', '[\"seeded\"]', \
             'ab', 1000, 'old-admin')",
            "INSERT INTO audit_events (at, actor, via, action, target, remote, outcome, detail) \
             VALUES (1000, 'old-admin', 'rest', 'key.create', 'oldkey000000000000ab', 'local', 'ok', '')",
        ],
    };
    for sql in statements.iter().chain(later) {
        sqlx::query(*sql).execute(db.pool()).await.expect("seed");
    }
}

/// What the seed of `version` wrote beyond the first schema's data, checked after the
/// upgrade.
async fn check_later_seed(control: &ControlPlane, version: i64) {
    let admin = Actor::unauthenticated_admin("test");
    let history = control
        .history("seeded", "per_user", None, None, &admin)
        .await
        .expect("readable after the upgrade");
    let actors: Vec<&str> = history.items.iter().map(|c| c.actor.as_str()).collect();
    if version >= 2 {
        assert_eq!(actors, ["old-admin", "old-editor"], "seeded at {version}");
    } else {
        assert_eq!(actors, ["old-admin"], "seeded at {version}");
    }
    let keys = control
        .list_keys(None, None, &admin)
        .await
        .expect("readable after the upgrade");
    let old_key = keys.items.iter().any(|k| k.name == "from an old release");
    assert_eq!(old_key, version >= 3, "seeded at {version}");
    let audit = control
        .audit_log(None, None, None, &admin)
        .await
        .expect("readable after the upgrade");
    let old_entry = audit.items.iter().any(|e| e.actor == "old-admin");
    assert_eq!(old_entry, version >= 3, "seeded at {version}");
}

#[tokio::test]
async fn data_seeded_at_every_earlier_version_survives_the_upgrade() {
    for backend in BACKENDS {
        let all = versions(backend);
        for (i, _) in all.iter().enumerate() {
            let test = TestDb::new(backend);
            let db = test.connect().await;
            let seeded_at = if i == 0 { 0 } else { all[i - 1] };
            if seeded_at > 0 {
                migrations::up_to(&db, seeded_at).await.unwrap();
            }
            seed(&db, seeded_at).await;
            let status = migrations::status(&db).await.unwrap();
            assert!(migrations::require_current(&status).is_err());
            migrations::up(&db).await.unwrap();

            let control = ControlPlane::new(db).await.unwrap();
            if seeded_at >= 1 {
                let policy = control
                    .get_policy("seeded", "per_user", &Actor::unauthenticated_admin("test"))
                    .await
                    .unwrap();
                assert_eq!(policy.rate_limit.requests_per_unit, Some(5));
                assert_eq!(policy.updated_by, "old-admin");
                let domain = control
                    .get_domain("seeded", &Actor::unauthenticated_admin("test"))
                    .await
                    .unwrap();
                assert_eq!(domain.description, "from an old release");
                check_later_seed(&control, seeded_at).await;
                assert_eq!(
                    control
                        .snapshot(&tollgate_control::Actor::unauthenticated_admin("test"))
                        .await
                        .unwrap()
                        .revision,
                    7
                );
                // The upgraded store keeps working: the next change is revision 8.
                let spec = crate::support::per_minute("user", 9);
                let written = control
                    .put_policy(
                        "seeded",
                        "per_user",
                        &spec,
                        Precondition::Revision(7),
                        &Actor::unauthenticated_admin("test"),
                    )
                    .await
                    .unwrap();
                assert_eq!(
                    written.value.revision, 8,
                    "{backend:?} seeded at {seeded_at}"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_dry_run_prints_only_the_pending_sql() {
    for backend in BACKENDS {
        let test = TestDb::new(backend);
        let db = test.connect().await;
        let all = versions(backend);
        migrations::up_to(&db, all[0]).await.unwrap();
        let sql = migrations::pending_sql(&db).await.unwrap();
        assert!(!sql.contains(&format!("-- migration {} ", all[0])), "{sql}");
        assert!(sql.contains(&format!("-- migration {} ", all[1])), "{sql}");
        assert!(sql.contains("ALTER TABLE policy_changes"), "{sql}");
        // Printing changed nothing.
        let status = migrations::status(&db).await.unwrap();
        assert_eq!(status[1].state, MigrationState::Pending);
    }
}

#[tokio::test]
async fn a_schema_newer_than_this_release_is_refused() {
    for backend in BACKENDS {
        let test = TestDb::new(backend);
        let db = test.connect().await;
        migrations::up(&db).await.unwrap();
        let checksum = match backend {
            Backend::Sqlite => "x'00'",
            Backend::Postgres => "'\\x00'::bytea",
        };
        let sql = format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99990101000000, 'from the future', TRUE, {checksum}, 1)"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(db.pool())
            .await
            .unwrap();
        let status = migrations::status(&db).await.unwrap();
        let err = migrations::require_current(&status)
            .unwrap_err()
            .to_string();
        assert!(err.contains("newer than this release"), "{err}");
        assert!(migrations::up(&db).await.is_err(), "up must refuse too");
    }
}

#[tokio::test]
async fn two_nodes_migrating_at_once_apply_each_migration_once() {
    let test = TestDb::new(Backend::Postgres);
    let (a, b) = (test.connect().await, test.connect().await);
    let (ra, rb) = tokio::join!(migrations::up(&a), migrations::up(&b));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let mut applied = [ra, rb].concat();
    applied.sort_unstable();
    assert_eq!(
        applied,
        versions(Backend::Postgres),
        "each applied by exactly one node"
    );
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(a.pool())
        .await
        .unwrap();
    assert_eq!(rows as usize, versions(Backend::Postgres).len());
}

/// Marks migration `version` as `column = value` in the migrator's own table.
async fn tamper(db: &tollgate_control::Database, set: &str, version: i64) {
    let sql = format!("UPDATE _sqlx_migrations SET {set} WHERE version = {version}");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(db.pool())
        .await
        .expect("the migrator's table can be changed");
}

#[tokio::test]
async fn a_migration_edited_after_it_was_applied_is_refused() {
    for backend in BACKENDS {
        let test = TestDb::new(backend);
        let db = test.connect().await;
        migrations::up(&db).await.unwrap();
        let first = versions(backend)[0];
        let checksum = match backend {
            Backend::Sqlite => "checksum = x'00'",
            Backend::Postgres => "checksum = '\\x00'::bytea",
        };
        tamper(&db, checksum, first).await;
        let status = migrations::status(&db).await.unwrap();
        assert_eq!(status[0].state, MigrationState::Modified, "{backend:?}");
        let err = migrations::require_current(&status)
            .unwrap_err()
            .to_string();
        assert!(err.contains("must never be edited"), "{err}");
        assert!(
            migrations::up(&db).await.is_err(),
            "{backend:?}: up must refuse too"
        );
    }
}

#[tokio::test]
async fn a_migration_that_failed_half_way_is_reported_dirty() {
    for backend in BACKENDS {
        let test = TestDb::new(backend);
        let db = test.connect().await;
        migrations::up(&db).await.unwrap();
        let last = *versions(backend).last().unwrap();
        tamper(&db, "success = FALSE", last).await;
        let status = migrations::status(&db).await.unwrap();
        let state = status.iter().find(|s| s.version == last).unwrap().state;
        assert_eq!(state, MigrationState::Dirty, "{backend:?}");
        let err = migrations::require_current(&status)
            .unwrap_err()
            .to_string();
        assert!(err.contains("failed half-way"), "{err}");
        assert!(
            migrations::up(&db).await.is_err(),
            "{backend:?}: up must refuse too"
        );
    }
}

/// The expand rule (docs/design/migrations.md): during a rolling upgrade a node of the
/// previous release keeps writing to the new schema with its own SQL, and both releases
/// read what the other wrote.
#[tokio::test]
async fn a_node_of_the_previous_release_writes_to_the_new_schema() {
    for backend in BACKENDS {
        let test = TestDb::new(backend);
        let db = test.connect().await;
        migrations::up(&db).await.unwrap();
        // Release N-1 wrote policy changes without the `via` column of migration 2 (the
        // oldest writer still supported by the schema); its statements must still work.
        seed(&db, 1).await;
        let control = ControlPlane::new(db).await.unwrap();
        let admin = Actor::unauthenticated_admin("test");
        let history = control
            .history("seeded", "per_user", None, None, &admin)
            .await
            .unwrap();
        assert_eq!(history.items.len(), 1, "{backend:?}");
        // This release writes next to it, and an old reader's query still sees both.
        let spec = crate::support::per_minute("user", 9);
        control
            .put_policy(
                "seeded",
                "per_user",
                &spec,
                Precondition::Revision(7),
                &admin,
            )
            .await
            .unwrap();
        let old_reader = test.connect().await;
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT revision, actor FROM policy_changes WHERE domain = 'seeded' ORDER BY revision",
        )
        .fetch_all(old_reader.pool())
        .await
        .unwrap();
        assert_eq!(
            rows,
            [(7, "old-admin".to_owned()), (8, "anonymous".to_owned())],
            "{backend:?}"
        );
    }
}
