//! Access over a real redb store: the first user, logins, persistence
//! across a reopen, and cascades.

use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use switchyard_store::RedbStore;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const REMOTE: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

fn open(dir: &Path, defaults: &Defaults) -> Arc<Access> {
    let store = Arc::new(RedbStore::open(dir).expect("open store"));
    let broker = Broker::open(store).expect("open broker");
    Access::open(broker, defaults)
}

/// Opens, runs `f`, flushes and drops everything, so a reopen sees it.
fn session<T>(dir: &Path, defaults: &Defaults, f: impl FnOnce(&Access) -> T) -> T {
    let access = open(dir, defaults);
    let out = f(&access);
    access.broker.flush();
    out
}

#[test]
fn a_fresh_store_has_guest_on_loopback_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let access = open(dir.path(), &Defaults::default());
    let id = access
        .authenticate("guest", "guest", LOOPBACK)
        .expect("guest from loopback");
    assert_eq!(id.tags, ["administrator"]);
    assert!(
        access
            .authenticate("guest", "guest", IpAddr::V6(Ipv6Addr::LOCALHOST))
            .is_ok()
    );
    assert_eq!(
        access.authenticate("guest", "guest", REMOTE),
        Err(Refused::LoopbackOnly)
    );
    assert_eq!(
        access.authenticate("guest", "wrong", LOOPBACK),
        Err(Refused::BadCredentials)
    );
    assert_eq!(
        access.authenticate("nobody", "guest", LOOPBACK),
        Err(Refused::BadCredentials)
    );
    assert!(access.may_use_vhost("guest", "/"));
    assert!(!access.may_use_vhost("guest", "other"));
    let stored = access.user("guest").expect("guest");
    assert!(stored.password_hash.starts_with("$argon2id$"), "{stored:?}");
    assert!(!stored.password_hash.contains("guest"));
}

#[test]
fn a_configured_default_user_replaces_guest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let defaults = Defaults {
        user: "admin".into(),
        password: "hunter2".into(),
        loopback_users: vec!["guest".into()],
    };
    let access = open(dir.path(), &defaults);
    assert!(access.user("guest").is_none());
    assert!(access.authenticate("admin", "hunter2", REMOTE).is_ok());
    assert!(access.may_use_vhost("admin", "/"));
}

#[test]
fn users_and_permissions_survive_a_reopen_and_the_first_user_is_made_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Defaults::default();
    session(dir.path(), &d, |a| {
        assert!(
            a.put_user(
                "bob",
                PasswordSpec::Clear("pw".into()),
                vec!["monitoring".into()]
            )
            .expect("put")
        );
        assert!(
            a.set_permission(Permission {
                user: "bob".into(),
                vhost: "/".into(),
                configure: "^bob-.*".into(),
                write: ".*".into(),
                read: ".*".into(),
            })
            .expect("set")
        );
        assert!(
            a.set_topic_permission(TopicPermission {
                user: "bob".into(),
                vhost: "/".into(),
                exchange: "amq.topic".into(),
                write: "^sensors\\.".into(),
                read: ".*".into(),
            })
            .expect("set topic")
        );
        assert!(a.delete_user("guest"));
    });
    session(dir.path(), &d, |a| {
        assert!(a.user("guest").is_none(), "guest deleted stays deleted");
        let bob = a.authenticate("bob", "pw", REMOTE).expect("bob logs in");
        assert_eq!(bob.tags, ["monitoring"]);
        assert_eq!(
            a.permission("/", "bob").map(|p| p.configure),
            Some("^bob-.*".to_owned())
        );
        assert_eq!(a.topic_permissions().len(), 1);
        assert!(a.permission("/", "guest").is_none());
    });
}

#[test]
fn deleting_a_user_takes_its_permissions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = open(dir.path(), &Defaults::default());
    assert!(a.delete_user("guest"));
    assert!(!a.delete_user("guest"));
    assert!(a.permissions().is_empty());
    assert_eq!(
        a.set_permission(Permission {
            user: "guest".into(),
            vhost: "/".into(),
            configure: ".*".into(),
            write: ".*".into(),
            read: ".*".into(),
        }),
        Err(ChangeError::NoUser("guest".into()))
    );
}

#[test]
fn a_changed_password_invalidates_the_remembered_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = open(dir.path(), &Defaults::default());
    assert!(a.authenticate("guest", "guest", LOOPBACK).is_ok());
    a.put_user("guest", PasswordSpec::Clear("new".into()), vec![])
        .expect("put");
    assert_eq!(
        a.authenticate("guest", "guest", LOOPBACK),
        Err(Refused::BadCredentials)
    );
    assert!(a.authenticate("guest", "new", LOOPBACK).is_ok());
    a.put_user("guest", PasswordSpec::Keep, vec!["management".into()])
        .expect("tags only");
    assert_eq!(
        a.authenticate("guest", "new", LOOPBACK).map(|i| i.tags),
        Ok(vec!["management".to_owned()])
    );
    a.put_user("guest", PasswordSpec::None, vec![])
        .expect("no password");
    assert_eq!(
        a.authenticate("guest", "new", LOOPBACK),
        Err(Refused::BadCredentials)
    );
}

#[test]
fn an_imported_rabbitmq_hash_logs_in_and_is_rehashed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = open(dir.path(), &Defaults::default());
    let hash = password::rabbit_sha256([9, 8, 7, 6], "from-rabbit");
    a.put_user(
        "old",
        PasswordSpec::Hash {
            hash,
            algorithm: password::RABBIT_SHA256.into(),
        },
        vec![],
    )
    .expect("import");
    assert!(a.authenticate("old", "from-rabbit", REMOTE).is_ok());
    let u = a.user("old").expect("user");
    assert_eq!(u.hashing_algorithm, password::ARGON2ID);
    assert!(a.authenticate("old", "from-rabbit", REMOTE).is_ok());
    assert_eq!(
        a.put_user(
            "md5",
            PasswordSpec::Hash {
                hash: "x".into(),
                algorithm: "rabbit_password_hashing_md5".into()
            },
            vec![]
        ),
        Err(ChangeError::BadAlgorithm(
            "rabbit_password_hashing_md5".into()
        ))
    );
}

#[test]
fn bad_patterns_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = open(dir.path(), &Defaults::default());
    let p = Permission {
        user: "guest".into(),
        vhost: "/".into(),
        configure: "(".into(),
        write: ".*".into(),
        read: ".*".into(),
    };
    assert_eq!(
        a.set_permission(p),
        Err(ChangeError::BadPattern("(".into()))
    );
}

#[test]
fn forgetting_a_vhost_clears_its_permissions_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = open(dir.path(), &Defaults::default());
    let on = |vhost: &str| Permission {
        user: "guest".into(),
        vhost: vhost.into(),
        configure: ".*".into(),
        write: ".*".into(),
        read: ".*".into(),
    };
    a.set_permission(on("v1")).expect("set");
    a.put_user("topic-only", PasswordSpec::None, vec![])
        .expect("user");
    a.set_topic_permission(TopicPermission {
        user: "topic-only".into(),
        vhost: "v1".into(),
        exchange: "amq.topic".into(),
        write: ".*".into(),
        read: ".*".into(),
    })
    .expect("topic permission");
    a.forget_vhost("v1");
    assert!(!a.may_use_vhost("guest", "v1"));
    assert!(a.topic_permissions().is_empty(), "topic permissions go too");
    assert!(a.may_use_vhost("guest", "/"));
}

#[test]
fn a_burst_of_logins_with_the_same_password_hashes_it_at_most_once_per_turn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = open(dir.path(), &Defaults::default());
    let before = a.kdf_checks();
    std::thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| {
                a.authenticate("guest", "guest", LOOPBACK)
                    .expect("guest logs in");
            });
        }
    });
    let spent = a.kdf_checks() - before;
    assert!(
        (1..=2).contains(&spent),
        "16 simultaneous logins hashed {spent} times; at most one per KDF turn (2)"
    );
    assert!(a.authenticate("guest", "guest", LOOPBACK).is_ok());
    assert_eq!(
        a.kdf_checks() - before,
        spent,
        "the next login is answered from memory"
    );
    assert!(a.authenticate("guest", "wrong", LOOPBACK).is_err());
    assert_eq!(
        a.kdf_checks() - before,
        spent + 1,
        "a wrong password is hashed"
    );
}

#[test]
fn permissions_match_as_rabbitmq_matches_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = open(dir.path(), &Defaults::default());
    a.put_user("bob", PasswordSpec::Clear("pw".into()), vec![])
        .expect("user");
    a.set_permission(Permission {
        user: "bob".into(),
        vhost: "/".into(),
        configure: "^bob-".into(),
        write: "amq.default|^bob-".into(),
        read: String::new(),
    })
    .expect("set");
    use PermissionKind::{Configure, Read, Write};
    assert!(a.permits("bob", "/", Configure, "bob-q"));
    assert!(!a.permits("bob", "/", Configure, "q-bob"));
    assert!(a.permits("bob", "/", Write, "amq.default"));
    assert!(
        !a.permits("bob", "/", Read, "bob-q"),
        "an empty pattern allows nothing"
    );
    assert!(
        !a.permits("bob", "other", Configure, "bob-q"),
        "no permission on the vhost"
    );
    assert!(
        a.permits("guest", "/", Read, "anything"),
        ".* allows everything"
    );
    a.clear_permission("/", "bob");
    assert!(!a.permits("bob", "/", Configure, "bob-q"));
}
