//! Access control on both databases: API keys (hash only, revocation, expiry, last use),
//! authorization in the service (roles × scopes), and the append-only audit log.

use tollgate_control::model::{NewApiKey, NewDomain};
use tollgate_control::{Actor, AuthFailure, ControlError, Precondition, Principal, Role, Scope};

use crate::support::{BACKENDS, TestDb, per_minute};

fn admin() -> Actor {
    Actor::unauthenticated_admin("test")
}

fn as_role(role: Role, domains: &[&str]) -> Actor {
    Principal {
        name: format!("{role}-of-{}", domains.join("+")),
        role,
        scope: Scope::from_names(domains.iter().copied()),
    }
    .acting("test", "127.0.0.1")
}

fn new_key(role: Role, domains: &[&str]) -> NewApiKey {
    NewApiKey {
        name: "ci".into(),
        role,
        domains: domains.iter().map(|d| (*d).to_owned()).collect(),
        expires_at: None,
    }
}

async fn two_domains(control: &tollgate_control::ControlPlane) {
    for name in ["alpha", "beta"] {
        control
            .create_domain(
                &NewDomain {
                    name: name.into(),
                    description: String::new(),
                },
                &admin(),
            )
            .await
            .expect("test fixture");
        control
            .put_policy(
                name,
                "p",
                &per_minute("user", 5),
                Precondition::None,
                &admin(),
            )
            .await
            .expect("test fixture");
    }
}

#[tokio::test]
async fn a_key_is_shown_once_stored_as_a_hash_and_authenticates_its_role_and_scope() {
    for backend in BACKENDS {
        let test = TestDb::new(backend);
        let control = test.control().await;
        let created = control
            .create_key(&new_key(Role::Editor, &["alpha"]), &admin())
            .await
            .unwrap();
        assert!(created.key.starts_with("tg_"), "{}", created.key);
        assert_eq!(created.key.len(), 3 + 20 + 1 + 64);
        // The store holds no trace of the secret.
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT id, hash FROM api_keys")
            .fetch_all(test.connect().await.pool())
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        let secret = created.key.rsplit('_').next().unwrap();
        assert!(!rows[0].1.contains(secret) && !created.key.contains(&rows[0].1));
        assert_eq!(rows[0].0, created.info.id);

        let principal = control.authenticate_key(&created.key).await.unwrap();
        assert_eq!(principal.role, Role::Editor);
        assert_eq!(principal.scope, Scope::from_names(["alpha"]));
        assert_eq!(principal.name, format!("key:{}", created.info.id));
        let listed = control.list_keys(None, None, &admin()).await.unwrap();
        assert_eq!(listed.items.len(), 1);
        assert!(
            listed.items[0].last_used_at.is_some(),
            "last use is recorded"
        );
        assert!(!serde_json::to_string(&listed).unwrap().contains(secret));

        // One wrong character of the secret is a wrong secret, not a near miss.
        let mut wrong = created.key.clone();
        let last = if wrong.ends_with('0') { "1" } else { "0" };
        wrong.replace_range(wrong.len() - 1.., last);
        assert!(matches!(
            control.authenticate_key(&wrong).await,
            Err(AuthFailure::WrongSecret)
        ));
        let unknown = format!("tg_{}_{}", "f".repeat(20), "0".repeat(64));
        assert!(matches!(
            control.authenticate_key(&unknown).await,
            Err(AuthFailure::UnknownKey)
        ));
        assert!(matches!(
            control.authenticate_key("tg_nope").await,
            Err(AuthFailure::Malformed(_))
        ));
    }
}

#[tokio::test]
async fn revoked_and_expired_keys_authenticate_nothing() {
    for backend in BACKENDS {
        let test = TestDb::new(backend);
        let control = test.control().await;
        let revoked = control
            .create_key(&new_key(Role::Admin, &["*"]), &admin())
            .await
            .unwrap();
        let info = control
            .revoke_key(&revoked.info.id, &admin())
            .await
            .unwrap();
        assert!(info.revoked_at.is_some());
        assert!(matches!(
            control.authenticate_key(&revoked.key).await,
            Err(AuthFailure::Revoked)
        ));
        assert!(matches!(
            control.revoke_key(&revoked.info.id, &admin()).await,
            Err(ControlError::Conflict(_))
        ));
        assert!(matches!(
            control.revoke_key("0000", &admin()).await,
            Err(ControlError::NotFound(_))
        ));

        let mut soon = new_key(Role::Viewer, &["*"]);
        soon.expires_at = Some("2999-01-01T00:00:00Z".into());
        let expiring = control.create_key(&soon, &admin()).await.unwrap();
        assert_eq!(
            expiring.info.expires_at.as_deref(),
            Some("2999-01-01T00:00:00.000Z")
        );
        control.authenticate_key(&expiring.key).await.unwrap();
        // Time passes: the key's expiry is now behind us.
        sqlx::query("UPDATE api_keys SET expires_at = 1 WHERE id = $1")
            .bind(&expiring.info.id)
            .execute(test.connect().await.pool())
            .await
            .unwrap();
        assert!(matches!(
            control.authenticate_key(&expiring.key).await,
            Err(AuthFailure::Expired)
        ));

        let mut past = new_key(Role::Viewer, &["*"]);
        past.expires_at = Some("2001-01-01T00:00:00Z".into());
        let err = control.create_key(&past, &admin()).await.unwrap_err();
        assert!(err.to_string().contains("expires_at"), "{err}");
    }
}

#[tokio::test]
async fn keys_and_the_audit_log_belong_to_admins_of_every_domain() {
    for backend in BACKENDS {
        let test = TestDb::new(backend);
        let control = test.control().await;
        for actor in [
            as_role(Role::Admin, &["alpha"]),
            as_role(Role::Editor, &["*"]),
            as_role(Role::Viewer, &["*"]),
        ] {
            let create = control
                .create_key(&new_key(Role::Viewer, &["alpha"]), &actor)
                .await;
            assert!(
                matches!(create, Err(ControlError::Forbidden(_))),
                "{actor:?}"
            );
            assert!(matches!(
                control.list_keys(None, None, &actor).await,
                Err(ControlError::Forbidden(_))
            ));
            assert!(matches!(
                control.audit_log(None, None, None, &actor).await,
                Err(ControlError::Forbidden(_))
            ));
        }
        let bad = NewApiKey {
            name: String::new(),
            role: Role::Viewer,
            domains: vec!["no spaces".into()],
            expires_at: None,
        };
        let ControlError::Invalid { errors } =
            control.create_key(&bad, &admin()).await.unwrap_err()
        else {
            panic!("expected invalid");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "domains[0]"]);
    }
}

#[tokio::test]
async fn the_service_enforces_roles_within_scopes() {
    for backend in BACKENDS {
        let test = TestDb::new(backend);
        let control = test.control().await;
        two_domains(&control).await;
        let viewer = as_role(Role::Viewer, &["alpha"]);
        let editor = as_role(Role::Editor, &["alpha"]);
        let scoped_admin = as_role(Role::Admin, &["alpha", "gamma"]);
        let spec = per_minute("ip", 7);

        // Listings show only the caller's domains.
        let names = |page: tollgate_control::model::Page<tollgate_control::model::Domain>| {
            page.items.into_iter().map(|d| d.name).collect::<Vec<_>>()
        };
        assert_eq!(
            names(control.list_domains(None, None, &viewer).await.unwrap()),
            ["alpha"]
        );
        assert_eq!(
            names(control.list_domains(None, None, &admin()).await.unwrap()),
            ["alpha", "beta"]
        );

        // Out of scope: refused alike whether the domain exists or not.
        for domain in ["beta", "does-not-exist"] {
            let err = control.get_domain(domain, &viewer).await.unwrap_err();
            assert!(matches!(err, ControlError::Forbidden(_)), "{err}");
            let err = control
                .list_policies(domain, None, None, &editor)
                .await
                .unwrap_err();
            assert!(matches!(err, ControlError::Forbidden(_)), "{err}");
        }

        // Viewers read; editors write policies; only admins touch domains.
        control.get_policy("alpha", "p", &viewer).await.unwrap();
        assert!(matches!(
            control
                .put_policy("alpha", "q", &spec, Precondition::None, &viewer)
                .await,
            Err(ControlError::Forbidden(_))
        ));
        control
            .put_policy("alpha", "q", &spec, Precondition::None, &editor)
            .await
            .unwrap();
        control
            .delete_policy("alpha", "q", Precondition::None, &editor)
            .await
            .unwrap();
        assert!(matches!(
            control
                .delete_domain("alpha", Precondition::None, true, &editor)
                .await,
            Err(ControlError::Forbidden(_))
        ));
        let gamma = NewDomain {
            name: "gamma".into(),
            description: String::new(),
        };
        assert!(matches!(
            control.create_domain(&gamma, &editor).await,
            Err(ControlError::Forbidden(_))
        ));
        control.create_domain(&gamma, &scoped_admin).await.unwrap();
        let beta = NewDomain {
            name: "beta2".into(),
            description: String::new(),
        };
        assert!(matches!(
            control.create_domain(&beta, &scoped_admin).await,
            Err(ControlError::Forbidden(_))
        ));

        // Applying a document: editors may change a domain's policies, not create one.
        let doc = tollgate_control::document::parse_document(
            "alpha.yaml",
            "domain: alpha\ndescriptors:\n  - key: ip\n    rate_limit: {unit: second, requests_per_unit: 1}\n",
        )
        .unwrap();
        control.apply_document(&doc, &editor).await.unwrap();
        let new_doc = tollgate_control::document::parse_document(
            "delta.yaml",
            "domain: delta\ndescriptors:\n  - key: ip\n    rate_limit: {unit: second, requests_per_unit: 1}\n",
        )
        .unwrap();
        let delta_editor = as_role(Role::Editor, &["delta"]);
        let revision = || async { control.snapshot(&admin()).await.unwrap().revision };
        let before = revision().await;
        assert!(matches!(
            control.apply_document(&new_doc, &delta_editor).await,
            Err(ControlError::Forbidden(_))
        ));
        // Refused before anything was written: the store's revision did not move.
        assert_eq!(revision().await, before);
        // The snapshot of every domain is the node's own read: no scoped caller gets it.
        assert!(matches!(
            control.snapshot(&scoped_admin).await,
            Err(ControlError::Forbidden(_))
        ));
    }
}

#[tokio::test]
async fn mutations_and_refusals_are_audited_and_the_log_is_append_only() {
    for backend in BACKENDS {
        let test = TestDb::new(backend);
        let control = test.control().await;
        two_domains(&control).await;
        let viewer = as_role(Role::Viewer, &["alpha"]);
        let _ = control
            .put_policy(
                "alpha",
                "x",
                &per_minute("user", 1),
                Precondition::None,
                &viewer,
            )
            .await;
        control
            .record_auth_failure("rest", "/v1/admin/domains", "127.0.0.9", "wrong secret")
            .await
            .unwrap();

        let log = control.audit_log(None, None, None, &admin()).await.unwrap();
        let rows: Vec<_> = log
            .items
            .iter()
            .map(|e| (e.action.as_str(), e.target.as_str(), e.outcome.as_str()))
            .collect();
        assert_eq!(
            rows,
            [
                ("authenticate", "/v1/admin/domains", "unauthenticated"),
                ("policy.put", "alpha/x", "denied"),
                ("policy.put", "beta/p", "ok"),
                ("domain.create", "beta", "ok"),
                ("policy.put", "alpha/p", "ok"),
                ("domain.create", "alpha", "ok"),
            ]
        );
        assert_eq!(log.items[1].actor, "viewer-of-alpha");
        assert_eq!(log.items[1].remote, "127.0.0.1");
        assert_eq!(log.items[0].remote, "127.0.0.9");

        let only = control
            .audit_log(Some("domain.create"), None, Some(1), &admin())
            .await
            .unwrap();
        assert_eq!(only.items.len(), 1);
        assert_eq!(only.items[0].target, "beta");
        let next = control
            .audit_log(
                Some("domain.create"),
                only.next_cursor.as_deref(),
                Some(1),
                &admin(),
            )
            .await
            .unwrap();
        assert_eq!(next.items[0].target, "alpha");

        for sql in [
            "UPDATE audit_events SET outcome = 'ok'",
            "DELETE FROM audit_events",
        ] {
            let err = sqlx::query(sql)
                .execute(test.connect().await.pool())
                .await
                .expect_err(sql);
            assert!(
                err.to_string().contains("append-only"),
                "{backend:?}: {err}"
            );
        }
    }
}
