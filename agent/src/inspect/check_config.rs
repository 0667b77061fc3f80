//! `strongroom check-config`: the config file parsed and validated exactly as every other
//! command does, and summarised, without contacting anything or reading the files it names
//! (secrets, keys and CA files are mounted only where the agent runs). A bad config has
//! already ended the process with exit 64 naming the key before this runs.

use std::path::Path;

use crate::config::Config;

/// One line per section that is set.
pub fn summary(config: &Config, path: &Path) -> String {
    let mut lines = vec![
        format!("config {} is valid", path.display()),
        format!(
            "  release {}: s3://{}/{} (region {}{})",
            config.release,
            config.s3.bucket,
            config.s3.prefix,
            config.s3.region,
            config
                .s3
                .endpoint
                .as_deref()
                .map(|e| format!(", endpoint {e}"))
                .unwrap_or_default()
        ),
    ];
    if let Some(pg) = &config.postgresql {
        lines.push(format!(
            "  postgresql: {}:{} database {} as {}, schedule \"{}\" UTC",
            pg.host, pg.port, pg.database, pg.user, pg.schedule
        ));
    }
    if let Some(ch) = &config.clickhouse {
        lines.push(format!(
            "  clickhouse: {} as {}, schedule \"{}\" UTC",
            ch.url, ch.user, ch.schedule
        ));
    }
    lines.push(format!(
        "  signing: {}",
        match (
            &config.signing.private_key_file,
            &config.signing.public_key_file
        ) {
            (Some(_), Some(_)) => "signs backups and checks signatures",
            (Some(_), None) => "signs backups",
            (None, Some(_)) => "checks signatures",
            (None, None) => "none (backups are UNSIGNED; restores refuse them by default)",
        }
    ));
    lines.push(format!("  daemon: listens on {}", config.daemon.listen));
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_each_section_that_is_set() {
        let yaml = "release: r\ns3: {bucket: bkt}\npostgresql: {database: d}\n";
        let config = Config::from_yaml(yaml, Path::new("c.yaml")).unwrap();
        let text = summary(&config, Path::new("c.yaml"));
        assert!(text.contains("config c.yaml is valid"), "{text}");
        assert!(text.contains("s3://bkt/backups"), "{text}");
        assert!(
            text.contains("postgresql: /var/run/postgresql:5432 database d"),
            "{text}"
        );
        assert!(!text.contains("clickhouse"), "{text}");
        assert!(text.contains("UNSIGNED"), "{text}");
    }
}
