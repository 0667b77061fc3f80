//! The `strongroom` binary: exit codes, messages, example configs, and a backup + list run
//! over TCP with the password from `PGPASSWORD`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use strongroom::config::Config;

use crate::harness::{self, TestId};
use crate::on_each_s3;

on_each_s3!(binary_backs_up_over_tcp_and_lists);

fn strongroom(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_strongroom"));
    c.args(args)
        .env_remove("STRONGROOM_CONFIG")
        .env_remove("RUST_LOG");
    c
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn every_example_config_parses_and_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 2, "expected example configs in {}", dir.display());
}

#[test]
fn bad_configs_exit_64_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = "release: app\ns3:\n  bucket: backups-1\npostgresql:\n  database: app\n";
    let cases = [
        (
            good.replace("bucket:", "bucktet: x\n  bucket:"),
            vec!["unknown field `bucktet`", "s3"],
        ),
        (
            good.replace("bucket:", "object_lock:\n    mode: WORM\n  bucket:"),
            vec!["s3.object_lock.mode", "WORM", "GOVERNANCE", "COMPLIANCE"],
        ),
        (
            good.replace("backups-1", "Backups_1"),
            vec!["`s3.bucket`", "Backups_1"],
        ),
        (
            good.replace("database: app", "database: app\n  compression_level: 12"),
            vec!["`postgresql.compression_level`", "12", "0-9"],
        ),
        ("release: app\n".to_string(), vec!["missing field `s3`"]),
        ("release: [\n".to_string(), vec!["config file"]),
    ];
    for (i, (body, needles)) in cases.iter().enumerate() {
        let path = write(dir.path(), &format!("c{i}.yaml"), body);
        let out = strongroom(&["backup", "--engine", "postgresql", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let all = text(&out);
        assert_eq!(out.status.code(), Some(64), "case {i}: {all}");
        for needle in needles {
            assert!(
                all.contains(needle),
                "case {i}: missing {needle:?} in {all}"
            );
        }
    }
    // A missing file, a missing password file, no --config at all, an unknown engine.
    let out = strongroom(&["list", "--config", "/nonexistent/strongroom.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    assert!(text(&out).contains("/nonexistent/strongroom.yaml"));
    let with_pw = write(
        dir.path(),
        "pw.yaml",
        &good.replace(
            "database: app",
            "database: app\n  password_file: /nonexistent/pw",
        ),
    );
    let out = strongroom(&["backup", "--engine", "postgresql", "--config"])
        .arg(&with_pw)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    assert!(
        text(&out).contains("postgresql.password_file"),
        "{}",
        text(&out)
    );
    let out = strongroom(&["list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out).contains("--config"));
    let out = strongroom(&["backup", "--engine", "oracle", "--config", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out).contains("postgresql"), "{}", text(&out));
}

async fn binary_backs_up_over_tcp_and_lists(id: TestId) {
    let db = harness::fresh_database(&id.database()).await;
    harness::load_sample(&db).await;
    let (bucket, _store) = harness::bucket(&id, true).await;
    let pg = harness::pg();
    let password = std::fs::read_to_string(&pg.password_file).unwrap();
    let password = password.trim_end();
    let yaml = harness::config_yaml(&id, &bucket, "", "")
        .replace(&format!("host: {}", pg.socket_dir), "host: 127.0.0.1")
        .replace(
            &format!("  password_file: {}\n", pg.password_file.display()),
            "",
        );
    assert!(!yaml.contains("password_file"), "{yaml}");
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "agent.yaml", &yaml);

    // Without the password the backup fails with a message naming what to check.
    let out = strongroom(&["backup", "--engine", "postgresql", "--config"])
        .arg(&path)
        .env_remove("PGPASSWORD")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("cannot connect to PostgreSQL"),
        "{}",
        text(&out)
    );

    let out = strongroom(&["backup", "--engine", "postgresql", "--json", "--config"])
        .arg(&path)
        .env("PGPASSWORD", password)
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        !all.contains(password),
        "the password leaked into the output"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = report["key"].as_str().unwrap().to_owned();

    let out = strongroom(&["list", "--json", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries = list.as_array().unwrap();
    assert_eq!(entries.len(), 1, "{list}");
    assert_eq!(entries[0]["key"], key.as_str());
    assert_eq!(entries[0]["complete"], true);
    assert_eq!(entries[0]["lock_mode"], "GOVERNANCE");
    assert_eq!(entries[0]["size_bytes"], report["size_bytes"]);
    let out = strongroom(&["list", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("complete") && table.contains(&key),
        "{table}"
    );
}
