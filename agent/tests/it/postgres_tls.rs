//! PostgreSQL over TLS, against the harness's server: TCP takes TLS only (`hostssl`, and
//! `hostnossl ... reject`), with a certificate for `localhost` alone issued by the CA in
//! `STRONGROOM_TEST_PG_CA`. Backups and restores verify it fully; a name the certificate does
//! not hold, a CA that did not issue it, and an unencrypted session are refused with messages
//! that say what to change.

use std::path::{Path, PathBuf};

use strongroom::config::Config;
use strongroom::engine::postgres::{self, ConnParams};
use strongroom::error::{EXIT_USAGE, Error};
use strongroom::pipeline::Progress;
use strongroom::signing::ManifestSigner;
use strongroom::store::ObjectStore as _;

use crate::harness::{self, TestId};
use crate::on_each_s3;

on_each_s3!(
    backup_and_restore_over_verified_tls,
    verify_full_refuses_a_host_name_the_certificate_does_not_hold,
    a_certificate_from_another_ca_or_a_missing_ca_file_is_refused,
    unencrypted_tcp_is_refused_by_the_server_and_the_message_says_so,
);

/// The test's config over TCP to `host`, with `tls` lines under `postgresql:` and `restore`
/// lines under `restore:` (restoring as `role`, with the key pair in `keys`).
fn config(
    id: &TestId,
    bucket: &str,
    host: &str,
    tls: &str,
    restore: &str,
    keys: Option<&(PathBuf, PathBuf)>,
) -> Config {
    let pg = harness::pg();
    let mut yaml = harness::config_yaml(id, bucket, "", tls).replace(
        &format!("host: {}", pg.socket_dir),
        &format!("host: {host}"),
    );
    if let Some((private, public)) = keys {
        yaml.push_str(&format!(
            "signing:\n  private_key_file: {}\n  public_key_file: {}\n",
            private.display(),
            public.display()
        ));
    }
    yaml.push_str(&format!(
        "restore:\n  validation:\n    http_timeout_seconds: 5\n{restore}"
    ));
    harness::config(&yaml)
}

/// `postgresql:` lines for `mode` with the harness's CA.
fn verified(mode: &str) -> String {
    format!(
        "  sslmode: {mode}\n  sslrootcert: {}\n",
        harness::pg_ca().display()
    )
}

/// Whether the server sees the session `params` opens (with the agent's own connect) as
/// encrypted, and with which protocol.
async fn session_tls(params: &ConnParams) -> (bool, Option<String>) {
    let client = postgres::connect(params)
        .await
        .unwrap_or_else(|e| panic!("connect {params:?}: {e}"));
    let row = client
        .query_one(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// A superuser that may log in over TCP with a password (the harness's `postgres` is trusted
/// over the socket only), for restores over TCP; returns `restore:` lines using it.
async fn tcp_restore_role(id: &TestId, dir: &Path) -> String {
    let role = format!("r_{}", id.database());
    let password = uuid::Uuid::new_v4().simple().to_string();
    harness::admin("postgres")
        .await
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE \"{role}\" LOGIN SUPERUSER; \
             EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
             ALTER ROLE \"{role}\" PASSWORD '{password}'"
        ))
        .await
        .unwrap();
    let file = dir.join("restore-password");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    format!("  user: {role}\n  password_file: {}\n", file.display())
}

async fn drop_database(name: &str) {
    harness::admin("postgres")
        .await
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await
        .unwrap();
}

async fn backup_and_restore_over_verified_tls(id: TestId) {
    let db = harness::fresh_database(&id.database()).await;
    harness::load_sample(&db).await;
    let (bucket, store) = harness::bucket(&id, true).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = harness::keypair(dir.path());
    let restore = tcp_restore_role(&id, dir.path()).await;
    // verify-full for the backup; the restore inherits postgresql.sslmode and sslrootcert.
    let config = config(
        &id,
        &bucket,
        "localhost",
        &verified("verify-full"),
        &restore,
        Some(&keys),
    );
    let pg = config.postgresql().unwrap();

    // The agent's own session is encrypted, and verified (verify-full succeeded).
    let (ssl, version) = session_tls(&pg.backup_params().unwrap()).await;
    assert!(ssl, "the agent's session is not encrypted");
    assert!(version.is_some_and(|v| v.starts_with("TLSv1.")));

    // The backup: the agent's snapshot session and pg_dump both go over TCP, which the server
    // takes only encrypted (the last test here shows it refusing plain TCP).
    let signer = ManifestSigner::load(&keys.0).unwrap();
    let report = harness::backup(&config, &store, Some(&signer), &Progress::default())
        .await
        .unwrap_or_else(|e| panic!("backup over verify-full TLS on {}: {e}", id.s3.name()));
    assert!(report.signed);

    let restored = format!("{}_tls", id.database());
    drop_database(&restored).await;
    let restore_params = pg.restore_params(&config.restore, &restored).unwrap();
    assert_eq!(
        restore_params.tls.effective_mode("localhost"),
        postgres::SslMode::VerifyFull
    );
    let outcome = harness::restore(&config, &store, &report.key, &restored)
        .await
        .unwrap_or_else(|e| panic!("restore over verify-full TLS on {}: {e}", id.s3.name()));
    assert!(outcome.passed, "{:#?}", outcome.checks);
    assert_eq!(
        harness::reference_dump(&restored),
        harness::reference_dump(&id.database())
    );
    // The restore role's sessions, psql's included, are TCP too, so encrypted; the agent's:
    let (ssl, _) = session_tls(&restore_params).await;
    assert!(ssl, "the restore's session is not encrypted");
    drop_database(&restored).await;
}

async fn verify_full_refuses_a_host_name_the_certificate_does_not_hold(id: TestId) {
    let db = harness::fresh_database(&id.database()).await;
    harness::load_sample(&db).await;
    let (bucket, store) = harness::bucket(&id, true).await;

    // 127.0.0.1 is the same server, but its certificate names only localhost.
    let config = config(
        &id,
        &bucket,
        "127.0.0.1",
        &verified("verify-full"),
        "",
        None,
    );
    let e = harness::backup(&config, &store, None, &Progress::default())
        .await
        .expect_err("verify-full must refuse a certificate for another name");
    let text = e.to_string();
    assert_eq!(e.exit_code(), 1, "{text}");
    for needle in [
        "127.0.0.1",
        "not valid for the host name \"127.0.0.1\"",
        "it names localhost",
        "`postgresql.sslmode` is verify-full",
        "`postgresql.host`",
        "verify-ca",
        "`postgresql.sslrootcert`",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from: {text}");
    }
    let prefix = format!("backups/{}/", id.test.replace('_', "-"));
    assert!(
        store.list_versions(&prefix).await.unwrap().is_empty(),
        "a refused backup wrote something"
    );

    // verify-ca checks the chain only, so the same address is accepted; so is require,
    // which checks nothing. Both are encrypted.
    for tls in [verified("verify-ca"), "  sslmode: require\n".to_owned()] {
        let config = config_for_session(&id, &bucket, "127.0.0.1", &tls);
        let params = config.postgresql().unwrap().backup_params().unwrap();
        assert!(session_tls(&params).await.0, "{tls}");
    }
    // The default, prefer, encrypts too when the server offers TLS.
    let config = config_for_session(&id, &bucket, "127.0.0.1", "");
    let params = config.postgresql().unwrap().backup_params().unwrap();
    assert!(session_tls(&params).await.0, "prefer");
}

fn config_for_session(id: &TestId, bucket: &str, host: &str, tls: &str) -> Config {
    config(id, bucket, host, tls, "", None)
}

async fn a_certificate_from_another_ca_or_a_missing_ca_file_is_refused(id: TestId) {
    let db = harness::fresh_database(&id.database()).await;
    harness::load_sample(&db).await;
    let (bucket, store) = harness::bucket(&id, true).await;
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other-ca.crt");
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-new", "-nodes", "-newkey", "ec"])
        .args(["-pkeyopt", "ec_paramgen_curve:prime256v1", "-days", "2"])
        .args(["-subj", "/CN=another CA", "-keyout", "/dev/null", "-out"])
        .arg(&other_ca)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    for mode in ["verify-full", "verify-ca", "require"] {
        let tls = format!("  sslmode: {mode}\n  sslrootcert: {}\n", other_ca.display());
        let config = config(&id, &bucket, "localhost", &tls, "", None);
        let e = harness::backup(&config, &store, None, &Progress::default())
            .await
            .expect_err("a certificate from another CA must be refused");
        let text = e.to_string();
        assert_eq!(e.exit_code(), 1, "{text}");
        for needle in [
            "localhost",
            "was not issued by a CA in `postgresql.sslrootcert`",
            "other-ca.crt",
            &format!("`postgresql.sslmode` is {mode}"),
        ] {
            assert!(
                text.contains(needle),
                "{mode}: {needle:?} missing from: {text}"
            );
        }
    }

    // A CA file that is not there: a config error (exit 64) naming the key, before any request.
    let absent = dir.path().join("absent.crt");
    let tls = format!(
        "  sslmode: verify-full\n  sslrootcert: {}\n",
        absent.display()
    );
    let config = config(&id, &bucket, "localhost", &tls, "", None);
    let e = harness::backup(&config, &store, None, &Progress::default())
        .await
        .expect_err("a missing CA file must be refused");
    assert!(matches!(e, Error::Config(_)), "{e}");
    assert_eq!(e.exit_code(), EXIT_USAGE, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("`postgresql.sslrootcert`") && text.contains("absent.crt"),
        "{text}"
    );
}

async fn unencrypted_tcp_is_refused_by_the_server_and_the_message_says_so(id: TestId) {
    let db = harness::fresh_database(&id.database()).await;
    harness::load_sample(&db).await;
    let (bucket, store) = harness::bucket(&id, true).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = harness::keypair(dir.path());

    let config_plain = config(&id, &bucket, "localhost", "  sslmode: disable\n", "", None);
    let e = harness::backup(&config_plain, &store, None, &Progress::default())
        .await
        .expect_err("the server takes only TLS over TCP");
    let text = e.to_string();
    for needle in [
        "localhost",
        "refused an unencrypted connection",
        "no encryption",
        "`postgresql.sslmode` is disable",
        "hostssl",
        "verify-full",
        "`postgresql.sslrootcert`",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from: {text}");
    }

    // restore.sslmode is the restore's own: a verified backup, then a restore told to
    // disable TLS is refused naming restore.sslmode.
    let restore = format!(
        "{}  sslmode: disable\n",
        tcp_restore_role(&id, dir.path()).await
    );
    let config = config(
        &id,
        &bucket,
        "localhost",
        &verified("verify-full"),
        &restore,
        Some(&keys),
    );
    let signer = ManifestSigner::load(&keys.0).unwrap();
    let report = harness::backup(&config, &store, Some(&signer), &Progress::default())
        .await
        .unwrap_or_else(|e| panic!("backup: {e}"));
    let restored = format!("{}_plain", id.database());
    drop_database(&restored).await;
    let e = harness::restore(&config, &store, &report.key, &restored)
        .await
        .expect_err("a restore over plain TCP is refused");
    let text = e.to_string();
    assert!(
        text.contains("refused an unencrypted connection")
            && text.contains("`restore.sslmode` is disable"),
        "{text}"
    );
}
