//! The domain service on both databases: CRUD, validation, conflicts, optimistic
//! concurrency, history, pagination, applying documents, snapshots, file ownership.

use std::collections::BTreeMap;

use tollgate_control::model::{ChangeAction, DomainSource, DomainUpdate, NewDomain};
use tollgate_control::{Actor, ControlError, Precondition, document};

use crate::support::{BACKENDS, TestDb, per_minute};

fn actor() -> Actor {
    Actor::unauthenticated_admin("test")
}

fn new_domain(name: &str) -> NewDomain {
    NewDomain {
        name: name.into(),
        description: String::new(),
    }
}

#[tokio::test]
async fn policies_are_created_replaced_and_deleted_with_history() {
    for backend in BACKENDS {
        let test = TestDb::new(backend);
        let control = test.control().await;
        let domain = control
            .create_domain(&new_domain("api"), &actor())
            .await
            .unwrap();
        assert_eq!(domain.source, DomainSource::Database);
        assert_eq!(domain.policy_count, 0);

        let v1 = per_minute("user", 10);
        let created = control
            .put_policy("api", "per_user", &v1, Precondition::Absent, &actor())
            .await
            .unwrap();
        assert!(created.created);
        let r1 = created.value.revision;
        assert_eq!(created.value.spec(), v1);

        let v2 = per_minute("user", 20);
        let replaced = control
            .put_policy("api", "per_user", &v2, Precondition::Revision(r1), &actor())
            .await
            .unwrap();
        assert!(!replaced.created);
        assert!(replaced.value.revision > r1);

        // A stale revision is refused and changes nothing.
        let stale = control
            .put_policy("api", "per_user", &v1, Precondition::Revision(r1), &actor())
            .await
            .unwrap_err();
        assert!(
            matches!(stale, ControlError::PreconditionFailed { current: Some(c), .. } if c == replaced.value.revision),
            "{stale:?}"
        );
        let again = control
            .put_policy("api", "per_user", &v1, Precondition::Absent, &actor())
            .await
            .unwrap_err();
        assert!(matches!(again, ControlError::Conflict(_)), "{again:?}");
        assert_eq!(
            control
                .get_policy("api", "per_user", &actor())
                .await
                .unwrap()
                .spec(),
            v2
        );

        control
            .delete_policy(
                "api",
                "per_user",
                Precondition::Revision(replaced.value.revision),
                &actor(),
            )
            .await
            .unwrap();
        assert!(matches!(
            control.get_policy("api", "per_user", &actor()).await,
            Err(ControlError::NotFound(_))
        ));

        let history = control
            .history("api", "per_user", None, None, &actor())
            .await
            .unwrap();
        let actions: Vec<ChangeAction> = history.items.iter().map(|c| c.action).collect();
        assert_eq!(
            actions,
            [
                ChangeAction::Deleted,
                ChangeAction::Updated,
                ChangeAction::Created
            ]
        );
        assert_eq!(history.items[1].before.as_ref(), Some(&v1));
        assert_eq!(history.items[1].after.as_ref(), Some(&v2));
        assert_eq!(history.items[0].after, None);
        // Pages of one, newest first, continue where the last stopped.
        let first = control
            .history("api", "per_user", None, Some(1), &actor())
            .await
            .unwrap();
        let second = control
            .history(
                "api",
                "per_user",
                first.next_cursor.as_deref(),
                Some(1),
                &actor(),
            )
            .await
            .unwrap();
        assert_eq!(second.items[0].action, ChangeAction::Updated);
    }
}

#[tokio::test]
async fn invalid_and_colliding_policies_are_refused_with_reasons() {
    for backend in BACKENDS {
        let test = TestDb::new(backend);
        let control = test.control().await;
        control
            .create_domain(&new_domain("api"), &actor())
            .await
            .unwrap();
        let mut bad = per_minute("user", 10);
        bad.rate_limit.burst = Some(5);
        let err = control
            .put_policy("api", "p", &bad, Precondition::None, &actor())
            .await
            .unwrap_err();
        let ControlError::Invalid { errors } = err else {
            panic!("{err:?}")
        };
        assert_eq!(errors[0].field, "rate_limit.burst");
        assert!(
            errors[0]
                .message
                .contains("burst applies only to algorithm gcra")
        );

        control
            .put_policy(
                "api",
                "a",
                &per_minute("user", 1),
                Precondition::None,
                &actor(),
            )
            .await
            .unwrap();
        let err = control
            .put_policy(
                "api",
                "b",
                &per_minute("user", 2),
                Precondition::None,
                &actor(),
            )
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("same descriptor as policy 'a'"),
            "{err}"
        );
        // Validation without saving says the same.
        let err = control
            .validate_policy("api", "b", &per_minute("user", 2), &actor())
            .await
            .unwrap_err();
        assert!(matches!(err, ControlError::Conflict(_)));
        control
            .validate_policy("api", "b", &per_minute("ip", 2), &actor())
            .await
            .unwrap();
        assert!(matches!(
            control.get_policy("api", "b", &actor()).await,
            Err(ControlError::NotFound(_))
        ));

        let err = control
            .put_policy(
                "nope",
                "a",
                &per_minute("user", 1),
                Precondition::None,
                &actor(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, ControlError::NotFound(_)), "{err:?}");
        let err = control
            .create_domain(&new_domain("a b"), &actor())
            .await
            .unwrap_err();
        assert!(matches!(err, ControlError::Invalid { .. }));
        let err = control
            .create_domain(&new_domain("api"), &actor())
            .await
            .unwrap_err();
        assert!(matches!(err, ControlError::Conflict(_)));
    }
}

#[tokio::test]
async fn domains_page_by_name_and_delete_only_when_empty_or_cascaded() {
    for backend in BACKENDS {
        let test = TestDb::new(backend);
        let control = test.control().await;
        for name in ["d3", "d1", "d5", "d2", "d4"] {
            control
                .create_domain(&new_domain(name), &actor())
                .await
                .unwrap();
        }
        control.set_file_domains(BTreeMap::from([(
            "d0".to_owned(),
            "files/d0.yaml".to_owned(),
        )]));
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = control
                .list_domains(cursor.as_deref(), Some(2), &actor())
                .await
                .unwrap();
            seen.extend(page.items.iter().map(|d| (d.name.clone(), d.source)));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["d0", "d1", "d2", "d3", "d4", "d5"]);
        assert_eq!(seen[0].1, DomainSource::File);

        // File domains are read-only here, and cannot be shadowed by a database domain.
        let err = control
            .create_domain(&new_domain("d0"), &actor())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("files/d0.yaml"), "{err}");
        let err = control
            .put_policy("d0", "p", &per_minute("k", 1), Precondition::None, &actor())
            .await
            .unwrap_err();
        assert!(matches!(err, ControlError::Conflict(_)));

        let d1 = control
            .update_domain(
                "d1",
                &DomainUpdate {
                    description: "first".into(),
                },
                Precondition::None,
                &actor(),
            )
            .await
            .unwrap();
        assert_eq!(d1.description, "first");
        let err = control
            .update_domain(
                "d1",
                &DomainUpdate {
                    description: "x".into(),
                },
                Precondition::Revision(d1.revision - 1),
                &actor(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, ControlError::PreconditionFailed { .. }));

        control
            .put_policy("d1", "p", &per_minute("k", 1), Precondition::None, &actor())
            .await
            .unwrap();
        let err = control
            .delete_domain("d1", Precondition::None, false, &actor())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("still has 1 policies"), "{err}");
        control
            .delete_domain("d1", Precondition::None, true, &actor())
            .await
            .unwrap();
        assert!(matches!(
            control.get_domain("d1", &actor()).await,
            Err(ControlError::NotFound(_))
        ));
    }
}

#[tokio::test]
async fn applying_a_document_changes_only_what_differs() {
    for backend in BACKENDS {
        let test = TestDb::new(backend);
        let control = test.control().await;
        let text = "domain: gitops\ndescriptors:\n  - key: user\n    rate_limit: {unit: minute, requests_per_unit: 10, name: per_user}\n  - key: ip\n    rate_limit: {unit: second, requests_per_unit: 5, name: per_ip}\n";
        let doc = document::parse_document("gitops.yaml", text).unwrap();
        let report = control
            .apply_document(&doc, &Actor::unauthenticated_admin("apply"))
            .await
            .unwrap();
        assert!(report.domain_created);
        assert_eq!(report.created, ["per_user", "per_ip"]);

        let again = control.apply_document(&doc, &actor()).await.unwrap();
        assert!(!again.changed(), "{again:?}");
        assert_eq!(again.unchanged.len(), 2);
        assert_eq!(
            again.revision, report.revision,
            "a no-op apply leaves the revision alone"
        );

        let text = "domain: gitops\ndescriptors:\n  - key: user\n    rate_limit: {unit: minute, requests_per_unit: 20, name: per_user}\n";
        let doc = document::parse_document("gitops.yaml", text).unwrap();
        let third = control.apply_document(&doc, &actor()).await.unwrap();
        assert_eq!(
            (third.updated.as_slice(), third.deleted.as_slice()),
            (&["per_user".to_owned()][..], &["per_ip".to_owned()][..])
        );
        let policy = control
            .get_policy("gitops", "per_user", &actor())
            .await
            .unwrap();
        assert_eq!(policy.rate_limit.requests_per_unit, Some(20));
        // The stored domain reads back as the same document.
        assert_eq!(control.document("gitops", &actor()).await.unwrap(), doc);

        let snapshot = control
            .snapshot(&Actor::unauthenticated_admin("test"))
            .await
            .unwrap();
        assert_eq!(snapshot.revision, third.revision);
        assert_eq!(snapshot.domains, vec![doc]);
    }
}
